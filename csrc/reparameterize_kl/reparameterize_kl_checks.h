#pragma once
// Argument checks shared by the CPU and CUDA entry points of reparameterize_kl.
#include <ATen/ATen.h>

#include <optional>

#include "common/checks.h"

namespace genmodels {

inline void check_reparameterize_kl_inputs(const at::Tensor& mu, const at::Tensor& logvar,
                                           const std::optional<at::Tensor>& eps,
                                           int64_t num_samples) {
  TORCH_CHECK(mu.dim() >= 1, "mu must have a batch dimension, got a 0-d tensor");
  check_floating(mu, "mu");
  check_same_dtype(logvar, mu, "logvar", "mu");
  check_same_device(logvar, mu, "logvar", "mu");
  check_same_shape(logvar, mu, "logvar", "mu");
  TORCH_CHECK(num_samples >= 1, "num_samples must be at least 1, got ", num_samples);
  if (eps.has_value()) {
    check_same_dtype(*eps, mu, "eps", "mu");
    check_same_device(*eps, mu, "eps", "mu");
    TORCH_CHECK(eps->dim() == mu.dim() + 1 && eps->size(0) == num_samples &&
                    eps->sizes().slice(1) == mu.sizes(),
                "eps must have shape [num_samples, *mu.shape] = [", num_samples, ", ",
                mu.sizes(), "], got ", eps->sizes());
  }
}

inline void check_reparameterize_kl_grads(const at::Tensor& grad_z, const at::Tensor& grad_kl,
                                          const at::Tensor& mu, int64_t num_samples) {
  check_same_dtype(grad_z, mu, "grad_z", "mu");
  check_same_dtype(grad_kl, mu, "grad_kl", "mu");
  check_same_device(grad_z, mu, "grad_z", "mu");
  check_same_device(grad_kl, mu, "grad_kl", "mu");
  TORCH_CHECK(grad_z.numel() == num_samples * mu.numel(), "grad_z must have ",
              num_samples * mu.numel(), " elements, got ", grad_z.numel());
  TORCH_CHECK(grad_kl.numel() == mu.size(0), "grad_kl must have ", mu.size(0),
              " elements, got ", grad_kl.numel());
}

}  // namespace genmodels
