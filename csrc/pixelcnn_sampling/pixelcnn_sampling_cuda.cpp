// Torch glue of the cached samplers' CUDA kernel: checks, allocation, stream, launch.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "common/checks.h"
#include "common/cuda_glue.h"
#include "pixelcnn_sampling/pixelcnn_sampling.h"
#include "pixelcnn_sampling/pixelcnn_sampling_cuda.h"

namespace genmodels {

at::Tensor pixelcnn_sampling_conv_at_cuda(const at::Tensor& x, const at::Tensor& weight,
                                          const std::optional<at::Tensor>& bias,
                                          const at::Tensor& runs, int64_t i, int64_t j) {
  check_device_type(x, at::kCUDA, "x");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "x must be float32 or float64");
  TORCH_CHECK(x.dim() == 4, "x must be [N, C_in, H, W]");
  check_same_dtype(weight, x, "weight", "x");
  check_same_device(weight, x, "weight", "x");
  TORCH_CHECK(weight.dim() == 2 && weight.stride(1) == 1, "weight must be [K, C_out], rows dense");
  TORCH_CHECK(runs.scalar_type() == at::kLong && runs.dim() == 2 && runs.size(0) == 3 &&
                  runs.is_contiguous() && runs.device() == x.device(),
              "runs must be a contiguous int64 [3, R] tensor on x's device");
  if (bias) {
    check_same_dtype(*bias, x, "bias", "x");
    TORCH_CHECK(bias->is_contiguous() && bias->numel() == weight.size(1), "bias must be [C_out]");
  }
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out = at::empty({x.size(0), weight.size(1)}, x.options());
  C10_CUDA_CHECK(pixelcnn_sampling_conv_at_launch(
      to_dtype(x.scalar_type()), x.const_data_ptr(), x.stride(0), x.stride(1), x.stride(2),
      x.stride(3), weight.const_data_ptr(), weight.stride(0),
      bias ? bias->const_data_ptr() : nullptr, out.mutable_data_ptr(),
      runs.const_data_ptr<int64_t>(), runs.size(1), x.size(0), x.size(1), weight.size(1), i, j,
      c10::cuda::getCurrentCUDAStream()));
  return out;
}

}  // namespace genmodels
