#pragma once
// Torch-free launchers of the reparameterize_kl CUDA kernels (raw pointers, sizes, a
// stream). Tensors are contiguous [samples, rows, cols] (z, eps, grad_z) and [rows, cols]
// (mu, logvar and their gradients); eps may be null, and then the noise is the Philox
// stream of (seed, offset).
#include <cuda_runtime.h>

#include <cstdint>

#include "common/cuda_dtype.h"

namespace genmodels {

// Bytes of scratch the forward launcher needs (0 when every row fits one block).
int64_t reparameterize_kl_forward_workspace_bytes(DType dtype, int64_t rows, int64_t cols);

cudaError_t reparameterize_kl_forward_launch(DType dtype, const void* mu, const void* logvar,
                                             const void* eps, void* z, void* kl,
                                             void* workspace, int64_t rows, int64_t cols,
                                             int64_t samples, uint64_t seed, uint64_t offset,
                                             cudaStream_t stream);

cudaError_t reparameterize_kl_backward_launch(DType dtype, const void* grad_z,
                                              const void* grad_kl, const void* mu,
                                              const void* logvar, const void* eps,
                                              void* grad_mu, void* grad_logvar, int64_t rows,
                                              int64_t cols, int64_t samples, uint64_t seed,
                                              uint64_t offset, cudaStream_t stream);

}  // namespace genmodels
