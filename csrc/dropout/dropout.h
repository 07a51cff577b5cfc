#pragma once
// Entry points of the dropout operator.
//
// forward returns out = x * keep / (1 - p), keep in {0, 1}, with x's dtype, sizes and
// strides. Element i of x in memory order (x's storage when it is non-overlapping and
// dense: contiguous, channels_last, any permutation; else a contiguous copy of x) is
// dropped iff word i % 4 of the Philox stream of (seed, offset) fails dropout_drops
// (common/philox.h), so the mask is never stored.
// Dropout is linear and its own adjoint in memory order: backward is forward applied to
// grad_out laid out like out, which is what the autograd node does.
#include <ATen/ATen.h>

namespace genmodels {

at::Tensor dropout_forward_cpu(const at::Tensor& x, double p, int64_t seed, int64_t offset);

#ifdef WITH_CUDA
at::Tensor dropout_forward_cuda(const at::Tensor& x, double p, int64_t seed, int64_t offset);
#endif

// The eager autograd path (CPU or CUDA by x's device): differentiable to any order.
at::Tensor dropout_autograd(const at::Tensor& x, double p, int64_t seed, int64_t offset);

}  // namespace genmodels
