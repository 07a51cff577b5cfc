// CPU kernels of masked_conv2d: an active-tap im2col (only the kept taps are gathered,
// so the GEMM after it does no work on masked taps) feeding one at::mm per pass
// (masked_conv2d_checks.h). The gather copies contiguous C-channel rows of an NHWC
// tensor, so it is dtype-agnostic; pixels are split over threads.
#include <ATen/Parallel.h>

#include <cstring>

#include "masked_conv2d/masked_conv2d.h"
#include "masked_conv2d/masked_conv2d_checks.h"

namespace genmodels {
namespace {

// src [N, H, W, C] contiguous -> cols [N * H * W, T * C]: cols[m, t * C + c] = src[m + d_t, c]
// (zero outside the image).
at::Tensor im2col_cpu(const at::Tensor& src, const TapOffsets& off) {
  const int64_t n = src.size(0), h = src.size(1), w = src.size(2), c = src.size(3);
  const int64_t taps = static_cast<int64_t>(off.dy.size());
  const int64_t m = n * h * w;
  at::Tensor cols = at::empty({m, taps * c}, src.options());
  if (cols.numel() == 0) return cols;
  const int64_t elem = src.element_size();
  const int64_t row_bytes = c * elem;
  const char* in = static_cast<const char*>(src.const_data_ptr());
  char* out = static_cast<char*>(cols.mutable_data_ptr());
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, taps * c));
  at::parallel_for(0, m, grain, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t b = p / (h * w), y = (p / w) % h, x = p % w;
      char* dst = out + p * taps * row_bytes;
      for (int64_t t = 0; t < taps; ++t, dst += row_bytes) {
        const int64_t yy = y + off.dy[t], xx = x + off.dx[t];
        if (yy >= 0 && yy < h && xx >= 0 && xx < w) {
          std::memcpy(dst, in + ((b * h + yy) * w + xx) * row_bytes, row_bytes);
        } else {
          std::memset(dst, 0, row_bytes);
        }
      }
    }
  });
  return cols;
}

}  // namespace

at::Tensor masked_conv2d_forward_cpu(const at::Tensor& x, const at::Tensor& weight,
                                     const std::optional<at::Tensor>& bias,
                                     const std::vector<int64_t>& taps,
                                     const std::optional<at::Tensor>& center_mask) {
  check_masked_conv2d_inputs(x, weight, bias, taps, center_mask);
  check_device_type(x, at::kCPU, "x");
  return masked_conv2d_forward_gemm(x, weight, bias, taps, center_mask, im2col_cpu);
}

std::tuple<at::Tensor, at::Tensor> masked_conv2d_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight,
    const std::vector<int64_t>& taps, const std::optional<at::Tensor>& center_mask,
    bool need_input, bool need_weight) {
  check_masked_conv2d_inputs(x, weight, std::nullopt, taps, center_mask);
  check_masked_conv2d_grad(grad_out, x, weight);
  check_device_type(x, at::kCPU, "x");
  return masked_conv2d_backward_gemm(grad_out, x, weight, taps, center_mask, need_input,
                                     need_weight, im2col_cpu);
}

}  // namespace genmodels
