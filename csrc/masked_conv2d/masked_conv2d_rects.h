#pragma once
// The rectangle formulation of masked_conv2d, device-independent (ATen only): the kept taps
// are covered by a few rectangles of the kernel, and each rectangle is a dense convolution
// of a shifted (padded or cropped) input, run by oneDNN on CPUs and cuDNN on GPUs.
//
// Two covers (tap_cover picks one):
// - exact: the kept taps split into maximal rectangles (PixelCNN A/B: the c x k rows above
//   the center plus the left part of the center row; the Gated stacks: one rectangle each).
//   No masked tap is computed, except the masked channel pairs of a colour-group center.
// - box: the bounding box of the kept taps, one convolution whose masked taps carry zero
//   weights. Used when the box adds at most a quarter to the kept taps (3x3 mask B: 6
//   taps for 5; 7x7 mask A/B: 28 for 24/25): one oneDNN call with its single pad copy beat
//   two on the digits-sized layers (8x8, B=64), where the per-call cost is a large part.
// GM_MASKED_CONV_COVER=exact|box overrides the choice.
#include <ATen/ATen.h>

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace genmodels {

struct Rect {
  int64_t r0, r1, c0, c1;  // kernel rows [r0, r1), columns [c0, c1)
  int64_t taps() const { return (r1 - r0) * (c1 - c0); }
  bool contains(int64_t ky, int64_t kx) const {
    return r0 <= ky && ky < r1 && c0 <= kx && kx < c1;
  }
  // constant_pad_nd padding {left, right, top, bottom} that makes the rectangle a valid conv
  std::vector<int64_t> pad(int64_t k) const {
    const int64_t c = k / 2;
    return {c - c0, c1 - 1 - c, c - r0, r1 - 1 - c};
  }
};

inline std::vector<Rect> exact_rects(const std::vector<int64_t>& taps, int64_t k) {
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

inline std::vector<Rect> tap_cover(const std::vector<int64_t>& taps, int64_t k) {
  std::vector<Rect> rects = exact_rects(taps, k);
  if (rects.size() <= 1) return rects;
  Rect box{k, 0, k, 0};
  for (int64_t t : taps) {
    box = {std::min(box.r0, t / k), std::max(box.r1, t / k + 1), std::min(box.c0, t % k),
           std::max(box.c1, t % k + 1)};
  }
  const char* env = std::getenv("GM_MASKED_CONV_COVER");
  if (env != nullptr && std::string(env) == "exact") return rects;
  const int64_t kept = static_cast<int64_t>(taps.size());
  if ((env != nullptr && std::string(env) == "box") || 4 * box.taps() <= 5 * kept) return {box};
  return rects;
}

// The kept taps as a k * k table.
inline std::vector<char> kept_table(const std::vector<int64_t>& taps, int64_t k) {
  std::vector<char> kept(k * k, 0);
  for (int64_t t : taps) kept[t] = 1;
  return kept;
}

// Whether rectangle r computes a tap (or, at a colour-group center, a channel pair) that
// the mask removes.
inline bool rect_has_masked(const Rect& r, const std::vector<char>& kept, int64_t k,
                            const std::optional<at::Tensor>& center_mask) {
  const int64_t c = k / 2;
  if (center_mask.has_value() && r.contains(c, c)) return true;
  for (int64_t ky = r.r0; ky < r.r1; ++ky) {
    for (int64_t kx = r.c0; kx < r.c1; ++kx) {
      if (!kept[ky * k + kx]) return true;
    }
  }
  return false;
}

// Applies the mask to t [C_out, C_in, rows, cols], rectangle r of a weight or of its
// gradient, in place: zeros the masked taps (a run of columns per row) and the center's
// masked channel pairs. Filled, not multiplied: a NaN or Inf there must not survive as 0 * NaN.
inline void mask_rect(at::Tensor t, const Rect& r, const std::vector<char>& kept, int64_t k,
                      const std::optional<at::Tensor>& center_mask) {
  const int64_t c = k / 2;
  for (int64_t ky = r.r0; ky < r.r1; ++ky) {
    for (int64_t kx = r.c0; kx < r.c1;) {
      if (kept[ky * k + kx]) {
        ++kx;
        continue;
      }
      int64_t end = kx;
      while (end < r.c1 && !kept[ky * k + end]) ++end;
      t.select(2, ky - r.r0).narrow(2, kx - r.c0, end - kx).zero_();
      kx = end;
    }
  }
  if (center_mask.has_value() && r.contains(c, c)) {
    t.select(2, c - r.r0).select(2, c - r.c0).masked_fill_(center_mask->eq(0), 0);
  }
}

inline at::Tensor channels_last(const at::Tensor& t) {
  return t.contiguous(at::MemoryFormat::ChannelsLast);
}

inline bool no_pad(const std::vector<int64_t>& pad) {
  return std::all_of(pad.begin(), pad.end(), [](int64_t p) { return p == 0; });
}

// x shifted for one rectangle's convolution (x itself when the rectangle is the whole
// kernel, e.g. 1x1).
inline at::Tensor padded_input(const at::Tensor& x, const std::vector<int64_t>& pad) {
  return no_pad(pad) ? x : channels_last(at::constant_pad_nd(x, pad));
}

// The weights of rectangle r for its convolution (channels_last), masked taps zeroed; a
// copy whenever the mask changes anything, never the caller's weight.
inline at::Tensor rect_weight(const at::Tensor& weight, const Rect& r,
                              const std::vector<char>& kept,
                              const std::optional<at::Tensor>& center_mask) {
  const int64_t k = weight.size(2);
  const at::Tensor w = weight.slice(2, r.r0, r.r1).slice(3, r.c0, r.c1);
  if (!rect_has_masked(r, kept, k, center_mask)) return channels_last(w);
  at::Tensor masked = w.clone(at::MemoryFormat::ChannelsLast);
  mask_rect(masked, r, kept, k, center_mask);
  return masked;
}

inline at::Tensor masked_conv2d_forward_rects(const at::Tensor& x_in, const at::Tensor& weight,
                                              const std::optional<at::Tensor>& bias,
                                              const std::vector<int64_t>& taps,
                                              const std::optional<at::Tensor>& center_mask) {
  const int64_t k = weight.size(2);
  const at::Tensor x = channels_last(x_in);
  const std::vector<Rect> cover = tap_cover(taps, k);
  const std::vector<char> kept = kept_table(taps, k);
  at::Tensor out;
  for (const Rect& r : cover) {
    const at::Tensor y = at::conv2d(padded_input(x, r.pad(k)),
                                    rect_weight(weight, r, kept, center_mask),
                                    out.defined() ? std::nullopt : bias);
    if (out.defined()) {
      out.add_(y);
    } else {
      out = y;
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
  const int64_t k = weight.size(2);
  const at::Tensor x = channels_last(x_in);
  const at::Tensor g = channels_last(grad_out);
  const std::vector<Rect> cover = tap_cover(taps, k);
  const std::vector<char> kept = kept_table(taps, k);
  at::Tensor grad_x, grad_w;
  if (need_weight) grad_w = at::zeros_like(weight, at::MemoryFormat::Contiguous);
  for (const Rect& r : cover) {
    const std::vector<int64_t> pad = r.pad(k);
    auto [gxp, gw, gb] = at::convolution_backward(
        g, padded_input(x, pad), rect_weight(weight, r, kept, center_mask), std::nullopt, {1, 1},
        {0, 0}, {1, 1}, false, {0, 0}, 1, {need_input, need_weight, false});
    if (need_input) {
      at::Tensor gx = no_pad(pad) ? gxp
                                  : channels_last(at::constant_pad_nd(
                                        gxp, {-pad[0], -pad[1], -pad[2], -pad[3]}));
      if (grad_x.defined()) {
        grad_x.add_(gx);
      } else {
        grad_x = gx;
      }
    }
    if (need_weight) {
      at::Tensor dst = grad_w.slice(2, r.r0, r.r1).slice(3, r.c0, r.c1);
      dst.copy_(gw);
      if (rect_has_masked(r, kept, k, center_mask)) mask_rect(dst, r, kept, k, center_mask);
    }
  }
  if (need_input && !grad_x.defined()) grad_x = at::zeros_like(x);
  return {need_input ? channels_last(grad_x) : x.new_empty({0}),
          need_weight ? grad_w : weight.new_empty({0})};
}

}  // namespace genmodels
