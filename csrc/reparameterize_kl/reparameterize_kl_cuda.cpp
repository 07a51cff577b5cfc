// Torch glue of the reparameterize_kl CUDA kernels: checks, allocation, stream, launch.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <vector>

#include "common/cuda_glue.h"
#include "reparameterize_kl/reparameterize_kl.h"
#include "reparameterize_kl/reparameterize_kl_checks.h"
#include "reparameterize_kl/reparameterize_kl_cuda.h"

namespace genmodels {

std::tuple<at::Tensor, at::Tensor> reparameterize_kl_forward_cuda(
    const at::Tensor& mu_in, const at::Tensor& logvar_in, const std::optional<at::Tensor>& eps_in,
    int64_t seed, int64_t offset, int64_t num_samples) {
  check_reparameterize_kl_inputs(mu_in, logvar_in, eps_in, num_samples);
  check_device_type(mu_in, at::kCUDA, "mu");
  const c10::cuda::CUDAGuard guard(mu_in.device());
  const at::Tensor mu = mu_in.contiguous();
  const at::Tensor logvar = logvar_in.contiguous();
  const at::Tensor eps = eps_in.has_value() ? eps_in->contiguous() : at::Tensor();
  std::vector<int64_t> z_shape{num_samples};
  z_shape.insert(z_shape.end(), mu.sizes().begin(), mu.sizes().end());
  at::Tensor z = at::empty(z_shape, mu.options());
  at::Tensor kl = at::empty({mu.size(0)}, mu.options());
  const int64_t rows = mu.size(0);
  if (rows == 0) return {z, kl};
  const int64_t cols = mu.numel() / rows;
  const DType dtype = to_dtype(mu.scalar_type());
  const int64_t ws_bytes = reparameterize_kl_forward_workspace_bytes(dtype, rows, cols);
  at::Tensor workspace = at::empty({ws_bytes}, mu.options().dtype(at::kByte));
  C10_CUDA_CHECK(reparameterize_kl_forward_launch(
      dtype, mu.const_data_ptr(), logvar.const_data_ptr(), data_or_null(eps),
      z.mutable_data_ptr(), kl.mutable_data_ptr(), ws_bytes ? workspace.mutable_data_ptr() : nullptr,
      rows, cols, num_samples, static_cast<uint64_t>(seed), static_cast<uint64_t>(offset),
      c10::cuda::getCurrentCUDAStream()));
  return {z, kl};
}

std::tuple<at::Tensor, at::Tensor> reparameterize_kl_backward_cuda(
    const at::Tensor& grad_z_in, const at::Tensor& grad_kl_in, const at::Tensor& mu_in,
    const at::Tensor& logvar_in, const std::optional<at::Tensor>& eps_in, int64_t seed,
    int64_t offset, int64_t num_samples) {
  check_reparameterize_kl_inputs(mu_in, logvar_in, eps_in, num_samples);
  check_reparameterize_kl_grads(grad_z_in, grad_kl_in, mu_in, num_samples);
  check_device_type(mu_in, at::kCUDA, "mu");
  const c10::cuda::CUDAGuard guard(mu_in.device());
  const at::Tensor mu = mu_in.contiguous();
  const at::Tensor logvar = logvar_in.contiguous();
  const at::Tensor eps = eps_in.has_value() ? eps_in->contiguous() : at::Tensor();
  const at::Tensor grad_z = grad_z_in.contiguous();
  const at::Tensor grad_kl = grad_kl_in.contiguous();
  at::Tensor grad_mu = at::empty_like(mu);
  at::Tensor grad_logvar = at::empty_like(logvar);
  const int64_t rows = mu.size(0);
  if (mu.numel() == 0) return {grad_mu, grad_logvar};
  C10_CUDA_CHECK(reparameterize_kl_backward_launch(
      to_dtype(mu.scalar_type()), grad_z.const_data_ptr(), grad_kl.const_data_ptr(),
      mu.const_data_ptr(), logvar.const_data_ptr(), data_or_null(eps),
      grad_mu.mutable_data_ptr(), grad_logvar.mutable_data_ptr(), rows, mu.numel() / rows,
      num_samples, static_cast<uint64_t>(seed), static_cast<uint64_t>(offset),
      c10::cuda::getCurrentCUDAStream()));
  return {grad_mu, grad_logvar};
}

}  // namespace genmodels
