#pragma once
// Argument checks and the device-independent GEMM formulation of masked_conv2d: the checks
// and the weight packing serve the CPU and CUDA entry points; the whole-tensor
// im2col + GEMM passes at the end serve CUDA (the CPU runs them in cache-sized chunks).
//
// With T kept taps at offsets (dy_t, dx_t) from the output pixel, the forward pass is
//   out[m, :] = sum_t x[m + d_t, :] @ W_t      (m a pixel, x in NHWC, W_t = weight[:, :, t]^T)
// = cols @ Wp with cols [M, T * C_in] the active-tap im2col of x and Wp [T * C_in, C_out].
// grad_x is the same convolution of grad_out with the mirrored taps (-dy_t, -dx_t) and
// the transposed weights; grad_Wp = cols^T @ grad_out. Only the kept taps are computed.
#include <ATen/ATen.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <algorithm>
#include <optional>
#include <tuple>
#include <vector>

#include "common/checks.h"

namespace genmodels {

// The kernels compute in the dtype they are given: the ATen calls inside them (oneDNN or
// cuDNN convolutions, GEMMs) must not be autocast a second time. The Python wrapper
// casts the inputs under torch.autocast as conv2d's own autocast rule would.
struct NoAutocast {
  c10::impl::ExcludeDispatchKeyGuard guard{c10::autocast_dispatch_keyset};
};

inline void check_masked_conv2d_inputs(const at::Tensor& x, const at::Tensor& weight,
                                       const std::optional<at::Tensor>& bias,
                                       const std::vector<int64_t>& taps,
                                       const std::optional<at::Tensor>& center_mask) {
  check_floating(x, "x");
  TORCH_CHECK(x.dim() == 4, "x must be a 4-D [N, C, H, W] tensor, got ", x.dim(), " dims");
  check_same_dtype(weight, x, "weight", "x");
  check_same_device(weight, x, "weight", "x");
  TORCH_CHECK(weight.dim() == 4 && weight.size(1) == x.size(1) && weight.size(2) == weight.size(3),
              "weight must have shape [C_out, ", x.size(1), ", k, k], got ", weight.sizes());
  const int64_t k = weight.size(2);
  TORCH_CHECK(k >= 1 && k % 2 == 1, "weight's kernel size must be positive and odd, got ", k);
  if (bias.has_value()) {
    check_same_dtype(*bias, x, "bias", "x");
    check_same_device(*bias, x, "bias", "x");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0), "bias must have shape [",
                weight.size(0), "], got ", bias->sizes());
  }
  bool has_center = false;
  for (size_t i = 0; i < taps.size(); ++i) {
    TORCH_CHECK(taps[i] >= 0 && taps[i] < k * k, "taps must lie in [0, ", k * k, "), got ",
                taps[i]);
    TORCH_CHECK(i == 0 || taps[i] > taps[i - 1], "taps must be strictly increasing");
    has_center |= taps[i] == (k / 2) * k + k / 2;
  }
  if (center_mask.has_value()) {
    TORCH_CHECK(has_center, "center_mask given but the center tap is not in taps");
    check_same_dtype(*center_mask, x, "center_mask", "x");
    check_same_device(*center_mask, x, "center_mask", "x");
    TORCH_CHECK(center_mask->dim() == 2 && center_mask->size(0) == weight.size(0) &&
                    center_mask->size(1) == weight.size(1),
                "center_mask must have shape [C_out, C_in], got ", center_mask->sizes());
  }
}

inline void check_masked_conv2d_grad(const at::Tensor& grad_out, const at::Tensor& x,
                                     const at::Tensor& weight) {
  check_same_dtype(grad_out, x, "grad_out", "x");
  check_same_device(grad_out, x, "grad_out", "x");
  TORCH_CHECK(grad_out.dim() == 4 && grad_out.size(0) == x.size(0) &&
                  grad_out.size(1) == weight.size(0) && grad_out.size(2) == x.size(2) &&
                  grad_out.size(3) == x.size(3),
              "grad_out must have shape [", x.size(0), ", ", weight.size(0), ", ", x.size(2),
              ", ", x.size(3), "], got ", grad_out.sizes());
}

// Offsets of the kept taps from the output pixel; `mirror` negates them (for grad_x).
struct TapOffsets {
  std::vector<int64_t> dy, dx;
};

inline TapOffsets tap_offsets(const std::vector<int64_t>& taps, int64_t k, bool mirror) {
  TapOffsets o;
  const int64_t c = k / 2, s = mirror ? -1 : 1;
  for (int64_t t : taps) {
    o.dy.push_back(s * (t / k - c));
    o.dx.push_back(s * (t % k - c));
  }
  return o;
}

// weight [C_out, C_in, k, k] -> [C_out, C_in, T] restricted to the kept taps, center masked.
inline at::Tensor kept_taps(const at::Tensor& weight, const std::vector<int64_t>& taps,
                            const std::optional<at::Tensor>& center_mask) {
  const int64_t k = weight.size(2);
  const at::Tensor idx = at::tensor(taps, weight.options().dtype(at::kLong));
  at::Tensor w = weight.reshape({weight.size(0), weight.size(1), k * k}).index_select(2, idx);
  if (center_mask.has_value()) {
    const int64_t center = (k / 2) * k + k / 2;
    const auto pos = std::find(taps.begin(), taps.end(), center) - taps.begin();
    w.select(2, pos).masked_fill_(center_mask->eq(0), 0);
  }
  return w;
}

// Wp [T * C_in, C_out] (row t * C_in + ci) for the forward GEMM.
inline at::Tensor pack_weight(const at::Tensor& weight, const std::vector<int64_t>& taps,
                              const std::optional<at::Tensor>& center_mask) {
  const int64_t t = static_cast<int64_t>(taps.size());
  return kept_taps(weight, taps, center_mask).permute({2, 1, 0}).reshape({t * weight.size(1), weight.size(0)});
}

// [T * C_out, C_in] (row t * C_out + co) for the grad_x GEMM over mirrored taps.
inline at::Tensor pack_weight_transposed(const at::Tensor& weight,
                                         const std::vector<int64_t>& taps,
                                         const std::optional<at::Tensor>& center_mask) {
  const int64_t t = static_cast<int64_t>(taps.size());
  return kept_taps(weight, taps, center_mask).permute({2, 0, 1}).reshape({t * weight.size(0), weight.size(1)});
}

// grad_Wp [T * C_in, C_out] -> full grad_weight [C_out, C_in, k, k], zero off the kept taps.
inline at::Tensor unpack_weight_grad(const at::Tensor& grad_wp, const at::Tensor& weight,
                                     const std::vector<int64_t>& taps,
                                     const std::optional<at::Tensor>& center_mask) {
  const int64_t c_out = weight.size(0), c_in = weight.size(1), k = weight.size(2);
  const int64_t t = static_cast<int64_t>(taps.size());
  at::Tensor full = at::zeros({c_out, c_in, k * k}, weight.options());
  if (t == 0) return full.view({c_out, c_in, k, k});
  at::Tensor g = grad_wp.view({t, c_in, c_out}).permute({2, 1, 0}).contiguous();
  if (center_mask.has_value()) {
    const int64_t center = (k / 2) * k + k / 2;
    const auto pos = std::find(taps.begin(), taps.end(), center) - taps.begin();
    g.select(2, pos).masked_fill_(center_mask->eq(0), 0);
  }
  full.index_copy_(2, at::tensor(taps, weight.options().dtype(at::kLong)), g);
  return full.view({c_out, c_in, k, k});
}

// NHWC [N, H, W, C] contiguous view of an NCHW tensor (free for channels_last inputs).
inline at::Tensor to_nhwc(const at::Tensor& t) { return t.permute({0, 2, 3, 1}).contiguous(); }

// The forward pass, the input gradient and the weight gradient as im2col + one GEMM each.
// `im2col(src_nhwc, offsets) -> [M, T * C]` is the device's active-tap im2col.
template <typename Im2col>
at::Tensor masked_conv2d_forward_gemm(const at::Tensor& x, const at::Tensor& weight,
                                      const std::optional<at::Tensor>& bias,
                                      const std::vector<int64_t>& taps,
                                      const std::optional<at::Tensor>& center_mask,
                                      const Im2col& im2col) {
  const int64_t n = x.size(0), h = x.size(2), w = x.size(3), c_out = weight.size(0);
  at::Tensor out = at::empty({n, h, w, c_out}, x.options());
  if (out.numel() == 0) return out.permute({0, 3, 1, 2});
  const at::Tensor cols = im2col(to_nhwc(x), tap_offsets(taps, weight.size(2), false));
  const at::Tensor wp = pack_weight(weight, taps, center_mask);
  at::Tensor out2d = out.view({n * h * w, c_out});
  if (bias.has_value()) {
    at::addmm_out(out2d, *bias, cols, wp);
  } else {
    at::mm_out(out2d, cols, wp);
  }
  return out.permute({0, 3, 1, 2});
}

template <typename Im2col>
std::tuple<at::Tensor, at::Tensor> masked_conv2d_backward_gemm(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight,
    const std::vector<int64_t>& taps, const std::optional<at::Tensor>& center_mask,
    bool need_input, bool need_weight, const Im2col& im2col) {
  const int64_t n = x.size(0), c_in = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t c_out = weight.size(0), k = weight.size(2), m = n * h * w;
  at::Tensor grad_x = x.new_empty({0});
  at::Tensor grad_w = weight.new_empty({0});
  const at::Tensor g = to_nhwc(grad_out);
  if (need_input) {
    at::Tensor gx = at::empty({n, h, w, c_in}, x.options());
    if (gx.numel() > 0) {
      const at::Tensor cols = im2col(g, tap_offsets(taps, k, true));
      at::Tensor gx2d = gx.view({m, c_in});
      at::mm_out(gx2d, cols, pack_weight_transposed(weight, taps, center_mask));
    }
    grad_x = gx.permute({0, 3, 1, 2});
  }
  if (need_weight) {
    if (m == 0 || taps.empty()) {
      grad_w = at::zeros_like(weight, at::MemoryFormat::Contiguous);
    } else {
      const at::Tensor cols = im2col(to_nhwc(x), tap_offsets(taps, k, false));
      const at::Tensor gwp = at::mm(cols.t(), g.view({m, c_out}));
      grad_w = unpack_weight_grad(gwp, weight, taps, center_mask);
    }
  }
  return {grad_x, grad_w};
}

}  // namespace genmodels
