#pragma once
// The rectangle formulation of masked_conv2d, device-independent (ATen only): the kept taps
// of every tap set form a few rectangles of the kernel (PixelCNN A/B: the rows above the
// center, c x k, plus the left part of the center row; the Gated stacks: one rectangle
// each), and each rectangle is a dense convolution of a shifted (padded or cropped) input,
// run by oneDNN on CPUs and cuDNN on GPUs. No masked tap is computed, except the masked
// channel pairs of a colour-group center tap, whose weights are zeroed.
#include <ATen/ATen.h>

#include <optional>
#include <tuple>
#include <vector>

namespace genmodels {

struct Rect {
  int64_t r0, r1, c0, c1;  // kernel rows [r0, r1), columns [c0, c1)
  // constant_pad_nd padding {left, right, top, bottom} that makes the rectangle a valid conv
  std::vector<int64_t> pad(int64_t k) const {
    const int64_t c = k / 2;
    return {c - c0, c1 - 1 - c, c - r0, r1 - 1 - c};
  }
};

inline std::vector<Rect> tap_rects(const std::vector<int64_t>& taps, int64_t k) {
  std::vector<Rect> runs;  // maximal runs of consecutive columns within a row
  for (int64_t t : taps) {
    const int64_t ky = t / k, kx = t % k;
    if (!runs.empty() && runs.back().r0 == ky && runs.back().c1 == kx) {
      ++runs.back().c1;
    } else {
      runs.push_back({ky, ky + 1, kx, kx + 1});
    }
  }
  std::vector<Rect> rects;  // stack runs of consecutive rows with the same columns
  for (const Rect& r : runs) {
    if (!rects.empty() && rects.back().r1 == r.r0 && rects.back().c0 == r.c0 &&
        rects.back().c1 == r.c1) {
      rects.back().r1 = r.r1;
    } else {
      rects.push_back(r);
    }
  }
  return rects;
}

inline at::Tensor rect_weight(const at::Tensor& weight, const Rect& r,
                              const std::optional<at::Tensor>& center_mask) {
  const int64_t c = weight.size(2) / 2;
  at::Tensor w = weight.slice(2, r.r0, r.r1).slice(3, r.c0, r.c1);
  if (center_mask.has_value() && r.r0 <= c && c < r.r1 && r.c0 <= c && c < r.c1) {
    w = w.clone(at::MemoryFormat::Contiguous);  // never the caller's weight
    w.select(2, c - r.r0).select(2, c - r.c0).mul_(*center_mask);
  }
  return w;
}

inline at::Tensor channels_last(const at::Tensor& t) {
  return t.contiguous(at::MemoryFormat::ChannelsLast);
}

inline at::Tensor masked_conv2d_forward_rects(const at::Tensor& x_in, const at::Tensor& weight,
                                              const std::optional<at::Tensor>& bias,
                                              const std::vector<int64_t>& taps,
                                              const std::optional<at::Tensor>& center_mask) {
  const int64_t k = weight.size(2);
  const at::Tensor x = channels_last(x_in);
  at::Tensor out;
  for (const Rect& r : tap_rects(taps, k)) {
    const at::Tensor xp = channels_last(at::constant_pad_nd(x, r.pad(k)));
    const at::Tensor w = channels_last(rect_weight(weight, r, center_mask));
    if (!out.defined()) {
      out = at::conv2d(xp, w, bias);
    } else {
      out.add_(at::conv2d(xp, w));
    }
  }
  if (!out.defined()) {  // no kept tap: bias only
    out = at::zeros({x.size(0), weight.size(0), x.size(2), x.size(3)}, x.options());
    if (bias.has_value()) out.add_(bias->view({1, -1, 1, 1}));
  }
  return channels_last(out);
}

inline std::tuple<at::Tensor, at::Tensor> masked_conv2d_backward_rects(
    const at::Tensor& grad_out, const at::Tensor& x_in, const at::Tensor& weight,
    const std::vector<int64_t>& taps, const std::optional<at::Tensor>& center_mask,
    bool need_input, bool need_weight) {
  const int64_t k = weight.size(2), c = k / 2;
  const at::Tensor x = channels_last(x_in);
  const at::Tensor g = channels_last(grad_out);
  at::Tensor grad_x = need_input ? at::zeros_like(x) : x.new_empty({0});
  at::Tensor grad_w = need_weight ? at::zeros_like(weight, at::MemoryFormat::Contiguous)
                                  : weight.new_empty({0});
  for (const Rect& r : tap_rects(taps, k)) {
    const std::vector<int64_t> pad = r.pad(k);
    const at::Tensor xp = channels_last(at::constant_pad_nd(x, pad));
    const at::Tensor w = channels_last(rect_weight(weight, r, center_mask));
    auto [gxp, gw, gb] = at::convolution_backward(g, xp, w, std::nullopt, {1, 1}, {0, 0}, {1, 1},
                                                  false, {0, 0}, 1,
                                                  {need_input, need_weight, false});
    if (need_input) {
      grad_x.add_(at::constant_pad_nd(gxp, {-pad[0], -pad[1], -pad[2], -pad[3]}));
    }
    if (need_weight) {
      if (center_mask.has_value() && r.r0 <= c && c < r.r1 && r.c0 <= c && c < r.c1) {
        gw.select(2, c - r.r0).select(2, c - r.c0).mul_(*center_mask);
      }
      grad_w.slice(2, r.r0, r.r1).slice(3, r.c0, r.c1).copy_(gw);
    }
  }
  return {grad_x, grad_w};
}

}  // namespace genmodels
