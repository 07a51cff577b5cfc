// Torch glue of the gradient_penalty CUDA kernels: checks, allocation, stream, launch.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "common/cuda_glue.h"
#include "gradient_penalty/gradient_penalty.h"
#include "gradient_penalty/gradient_penalty_checks.h"
#include "gradient_penalty/gradient_penalty_cuda.h"

namespace genmodels {

std::tuple<at::Tensor, at::Tensor> gradient_penalty_forward_cuda(const at::Tensor& grads_in,
                                                                 double target, bool one_sided) {
  check_gradient_penalty_inputs(grads_in);
  check_device_type(grads_in, at::kCUDA, "grads");
  const c10::cuda::CUDAGuard guard(grads_in.device());
  const at::Tensor grads = gradient_penalty_dense_rows(grads_in);
  const int64_t rows = grads.size(0);
  at::Tensor penalty = at::empty({rows}, grads.options());
  at::Tensor norm =
      at::empty({rows}, grads.options().dtype(gradient_penalty_acc_type(grads.scalar_type())));
  if (rows == 0) return {penalty, norm};
  const int64_t cols = grads.numel() / rows;
  const DType dtype = to_dtype(grads.scalar_type());
  const int64_t ws_bytes = gradient_penalty_forward_workspace_bytes(dtype, rows, cols);
  at::Tensor workspace = at::empty({ws_bytes}, grads.options().dtype(at::kByte));
  C10_CUDA_CHECK(gradient_penalty_forward_launch(
      dtype, grads.const_data_ptr(), penalty.mutable_data_ptr(), norm.mutable_data_ptr(),
      ws_bytes ? workspace.mutable_data_ptr() : nullptr, rows, cols, target, one_sided,
      c10::cuda::getCurrentCUDAStream()));
  return {penalty, norm};
}

at::Tensor gradient_penalty_backward_cuda(const at::Tensor& grad_penalty_in,
                                          const at::Tensor& grad_norm_in,
                                          const at::Tensor& grads_in, const at::Tensor& norm_in,
                                          double target, bool one_sided) {
  check_gradient_penalty_inputs(grads_in);
  check_gradient_penalty_grads(grad_penalty_in, grad_norm_in, grads_in, norm_in);
  check_device_type(grads_in, at::kCUDA, "grads");
  const c10::cuda::CUDAGuard guard(grads_in.device());
  const at::Tensor grads = gradient_penalty_dense_rows(grads_in);
  const at::Tensor grad_penalty = grad_penalty_in.contiguous();
  const at::Tensor grad_norm = grad_norm_in.contiguous();
  const at::Tensor norm = norm_in.contiguous();
  at::Tensor out = at::empty_like(grads);
  if (grads.numel() == 0) return out;
  const int64_t rows = grads.size(0);
  C10_CUDA_CHECK(gradient_penalty_backward_launch(
      to_dtype(grads.scalar_type()), grad_penalty.const_data_ptr(), grad_norm.const_data_ptr(),
      grads.const_data_ptr(), norm.const_data_ptr(), out.mutable_data_ptr(), rows,
      grads.numel() / rows, target, one_sided, c10::cuda::getCurrentCUDAStream()));
  return out;
}

}  // namespace genmodels
