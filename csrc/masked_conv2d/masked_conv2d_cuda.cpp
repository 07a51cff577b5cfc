// Torch glue of the masked_conv2d CUDA kernels: checks, the tap table, allocation, stream,
// launch. The GEMMs go through ATen (cuBLAS; TF32 as torch.backends.cuda.matmul allows).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdlib>
#include <string>

#include "common/cuda_glue.h"
#include "masked_conv2d/masked_conv2d.h"
#include "masked_conv2d/masked_conv2d_checks.h"
#include "masked_conv2d/masked_conv2d_cuda.h"
#include "masked_conv2d/masked_conv2d_rects.h"

namespace genmodels {
namespace {

constexpr int64_t kDirectMaxInputChannels = 4;

// GM_MASKED_CONV_CUDA_PATH=rects runs the kept-tap rectangles as cuDNN convolutions instead
// of the active-tap im2col + cuBLAS GEMM (default; no GPU measurement chose either yet).
bool use_rects() {
  const char* env = std::getenv("GM_MASKED_CONV_CUDA_PATH");
  return env != nullptr && std::string(env) == "rects";
}

TapTable make_tap_table(const TapOffsets& off) {
  TapTable table{};
  const int64_t count = static_cast<int64_t>(off.dy.size());
  TORCH_CHECK(count <= kMaskedConvMaxTaps, "masked_conv2d on CUDA supports at most ",
              kMaskedConvMaxTaps, " kept taps, got ", count);
  table.count = static_cast<int>(count);
  for (int64_t t = 0; t < count; ++t) {
    TORCH_CHECK(std::abs(off.dy[t]) <= kMaskedConvMaxOffset &&
                    std::abs(off.dx[t]) <= kMaskedConvMaxOffset,
                "masked_conv2d on CUDA supports kernel sizes up to ", 2 * kMaskedConvMaxOffset + 1);
    table.dy[t] = static_cast<int8_t>(off.dy[t]);
    table.dx[t] = static_cast<int8_t>(off.dx[t]);
  }
  return table;
}

at::Tensor im2col_cuda(const at::Tensor& src, const TapOffsets& off) {
  const int64_t n = src.size(0), h = src.size(1), w = src.size(2), c = src.size(3);
  const TapTable table = make_tap_table(off);
  at::Tensor cols = at::empty({n * h * w, table.count * c}, src.options());
  C10_CUDA_CHECK(masked_conv2d_im2col_launch(to_dtype(src.scalar_type()), src.const_data_ptr(),
                                             cols.mutable_data_ptr(), n, h, w, c, table,
                                             c10::cuda::getCurrentCUDAStream()));
  return cols;
}

}  // namespace

at::Tensor masked_conv2d_forward_cuda(const at::Tensor& x, const at::Tensor& weight,
                                      const std::optional<at::Tensor>& bias,
                                      const std::vector<int64_t>& taps,
                                      const std::optional<at::Tensor>& center_mask) {
  check_masked_conv2d_inputs(x, weight, bias, taps, center_mask);
  const NoAutocast no_autocast;
  check_device_type(x, at::kCUDA, "x");
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t c_in = x.size(1);
  if (x.numel() > 0 && use_rects()) {
    return masked_conv2d_forward_rects(x, weight, bias, taps, center_mask);
  }
  if (c_in > kDirectMaxInputChannels) {
    return masked_conv2d_forward_gemm(x, weight, bias, taps, center_mask, im2col_cuda);
  }
  const int64_t n = x.size(0), h = x.size(2), w = x.size(3), c_out = weight.size(0);
  at::Tensor out = at::empty({n, h, w, c_out}, x.options());
  if (out.numel() > 0) {
    const at::Tensor xs = to_nhwc(x);
    const at::Tensor wp = pack_weight(weight, taps, center_mask);
    const at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
    const TapTable table = make_tap_table(tap_offsets(taps, weight.size(2), false));
    C10_CUDA_CHECK(masked_conv2d_direct_forward_launch(
        to_dtype(x.scalar_type()), xs.const_data_ptr(), wp.const_data_ptr(), data_or_null(b),
        out.mutable_data_ptr(), n, h, w, c_in, c_out, table, c10::cuda::getCurrentCUDAStream()));
  }
  return out.permute({0, 3, 1, 2});
}

std::tuple<at::Tensor, at::Tensor> masked_conv2d_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight,
    const std::vector<int64_t>& taps, const std::optional<at::Tensor>& center_mask,
    bool need_input, bool need_weight) {
  check_masked_conv2d_inputs(x, weight, std::nullopt, taps, center_mask);
  const NoAutocast no_autocast;
  check_masked_conv2d_grad(grad_out, x, weight);
  check_device_type(x, at::kCUDA, "x");
  const c10::cuda::CUDAGuard guard(x.device());
  if (x.numel() > 0 && use_rects()) {
    return masked_conv2d_backward_rects(grad_out, x, weight, taps, center_mask, need_input,
                                        need_weight);
  }
  return masked_conv2d_backward_gemm(grad_out, x, weight, taps, center_mask, need_input,
                                     need_weight, im2col_cuda);
}

}  // namespace genmodels
