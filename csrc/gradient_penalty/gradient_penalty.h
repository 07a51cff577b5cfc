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

#include <string>
#include <tuple>

namespace genmodels {

// The batch reduction of the eager CPU path: the penalty per sample [B], its sum or its mean.
enum class GpReduction { None, Sum, Mean };

std::tuple<at::Tensor, at::Tensor> gradient_penalty_forward_cpu(const at::Tensor& grads,
                                                                double target, bool one_sided);

at::Tensor gradient_penalty_backward_cpu(const at::Tensor& grad_penalty,
                                         const at::Tensor& grad_norm, const at::Tensor& grads,
                                         const at::Tensor& norm, double target, bool one_sided);

// The eager CPU path of genmodels.ops.gradient_penalty (outside torch.compile): the op as one
// C++ autograd node with the batch reduction ("none", "sum" or "mean") folded in. Returns
// (output in grads' dtype: penalty [B], or a 0-d sum or mean; norm [B]). Both outputs are
// differentiable; a backward pass under create_graph calls the torch.library op
// genmodels::gradient_penalty_backward (registered from Python), so every order works.
std::tuple<at::Tensor, at::Tensor> gradient_penalty_autograd_cpu(const at::Tensor& grads,
                                                                 double target, bool one_sided,
                                                                 const std::string& reduction);

// Its kernels: forward with the reduction folded in (the sum or mean of the penalties as
// rounded to grads' dtype, summed in double); backward from grad_out (d loss / d output:
// [B] for "none", one element otherwise) and grad_norm, where an undefined tensor is zero.
std::tuple<at::Tensor, at::Tensor> gradient_penalty_forward_reduced_cpu(const at::Tensor& grads,
                                                                        double target,
                                                                        bool one_sided,
                                                                        GpReduction reduction);

at::Tensor gradient_penalty_backward_reduced_cpu(const at::Tensor& grad_out,
                                                 const at::Tensor& grad_norm,
                                                 const at::Tensor& grads, const at::Tensor& norm,
                                                 double target, bool one_sided,
                                                 GpReduction reduction);

#ifdef WITH_CUDA
std::tuple<at::Tensor, at::Tensor> gradient_penalty_forward_cuda(const at::Tensor& grads,
                                                                 double target, bool one_sided);

at::Tensor gradient_penalty_backward_cuda(const at::Tensor& grad_penalty,
                                          const at::Tensor& grad_norm, const at::Tensor& grads,
                                          const at::Tensor& norm, double target, bool one_sided);
#endif

}  // namespace genmodels
