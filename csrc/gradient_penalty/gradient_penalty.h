#pragma once
// Entry points of the fused gradient penalty operator.
//
// grads: [B, ...]. n[b] is the 2-norm of grads[b] over every non-batch dim, accumulated in
// float32 (float64 for float64 grads).
// forward returns (penalty [B] in grads' dtype, norm [B] in the accumulation dtype) with
// penalty[b] = (n[b] - target)^2, or max(0, n[b] - target)^2 when one_sided.
// backward returns grad_grads = grads * coef[b], coef[b] = (grad_penalty[b] * dp/dn + grad_norm[b]) / n[b],
// and 0 where n[b] == 0 (the gradient of the norm at 0 is defined as 0). grad_grads has
// grads' layout when grads is contiguous or channels_last, else it is contiguous.
#include <ATen/ATen.h>

#include <tuple>

namespace genmodels {

std::tuple<at::Tensor, at::Tensor> gradient_penalty_forward_cpu(const at::Tensor& grads,
                                                                double target, bool one_sided);

at::Tensor gradient_penalty_backward_cpu(const at::Tensor& grad_penalty,
                                         const at::Tensor& grad_norm, const at::Tensor& grads,
                                         const at::Tensor& norm, double target, bool one_sided);

#ifdef WITH_CUDA
std::tuple<at::Tensor, at::Tensor> gradient_penalty_forward_cuda(const at::Tensor& grads,
                                                                 double target, bool one_sided);

at::Tensor gradient_penalty_backward_cuda(const at::Tensor& grad_penalty,
                                          const at::Tensor& grad_norm, const at::Tensor& grads,
                                          const at::Tensor& norm, double target, bool one_sided);
#endif

}  // namespace genmodels
