#pragma once
// Entry points of the fused reparameterize + Gaussian KL operator.
//
// mu, logvar: [B, ...] (the same shape). eps: [k, *mu.shape], or absent, in which case
// the noise is the Philox stream of (seed, offset) (csrc/common/philox.h) and is never
// stored: backward draws it again.
// forward returns z = mu + eps * exp(logvar / 2) of shape [k, *mu.shape] and
// kl[b] = 0.5 * sum(exp(logvar) + mu^2 - 1 - logvar) over the non-batch dims.
// backward returns (grad_mu, grad_logvar) from grad_z [k, *mu.shape] and grad_kl [B].
#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace genmodels {

std::tuple<at::Tensor, at::Tensor> reparameterize_kl_forward_cpu(
    const at::Tensor& mu, const at::Tensor& logvar, const std::optional<at::Tensor>& eps,
    int64_t seed, int64_t offset, int64_t num_samples);

std::tuple<at::Tensor, at::Tensor> reparameterize_kl_backward_cpu(
    const at::Tensor& grad_z, const at::Tensor& grad_kl, const at::Tensor& mu,
    const at::Tensor& logvar, const std::optional<at::Tensor>& eps, int64_t seed,
    int64_t offset, int64_t num_samples);

#ifdef WITH_CUDA
std::tuple<at::Tensor, at::Tensor> reparameterize_kl_forward_cuda(
    const at::Tensor& mu, const at::Tensor& logvar, const std::optional<at::Tensor>& eps,
    int64_t seed, int64_t offset, int64_t num_samples);

std::tuple<at::Tensor, at::Tensor> reparameterize_kl_backward_cuda(
    const at::Tensor& grad_z, const at::Tensor& grad_kl, const at::Tensor& mu,
    const at::Tensor& logvar, const std::optional<at::Tensor>& eps, int64_t seed,
    int64_t offset, int64_t num_samples);
#endif

}  // namespace genmodels
