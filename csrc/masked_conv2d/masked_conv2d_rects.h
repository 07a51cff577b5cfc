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

// [1 or C_out, 1 or C_in, k, k] 0/1 mask of the kept taps (the center from center_mask).
inline at::Tensor tap_mask(const at::Tensor& weight, const std::vector<int64_t>& taps,
                           const std::optional<at::Tensor>& center_mask) {
  const int64_t k = weight.size(2), center = (k / 2) * k + k / 2;
  std::vector<float> flat(k * k, 0.0f);
  for (int64_t t : taps) flat[t] = 1.0f;
  at::Tensor mask = at::tensor(flat, weight.options().dtype(at::kFloat)).to(weight.dtype());
  mask = mask.view({1, 1, k, k});
  if (!center_mask.has_value()) return mask;
  mask = mask.repeat({weight.size(0), weight.size(1), 1, 1});
  mask.view({weight.size(0), weight.size(1), k * k}).select(2, center).copy_(*center_mask);
  return mask;
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

inline at::Tensor rect_weight(const at::Tensor& masked_weight, const Rect& r) {
  return channels_last(masked_weight.slice(2, r.r0, r.r1).slice(3, r.c0, r.c1));
}

inline bool masks_inside(const std::vector<Rect>& cover, const std::vector<int64_t>& taps,
                         const std::optional<at::Tensor>& center_mask) {
  int64_t covered = 0;
  for (const Rect& r : cover) covered += r.taps();
  return center_mask.has_value() || covered != static_cast<int64_t>(taps.size());
}

inline at::Tensor masked_conv2d_forward_rects(const at::Tensor& x_in, const at::Tensor& weight,
                                              const std::optional<at::Tensor>& bias,
                                              const std::vector<int64_t>& taps,
                                              const std::optional<at::Tensor>& center_mask) {
  const int64_t k = weight.size(2);
  const at::Tensor x = channels_last(x_in);
  const std::vector<Rect> cover = tap_cover(taps, k);
  const at::Tensor wm =
      masks_inside(cover, taps, center_mask) ? weight * tap_mask(weight, taps, center_mask) : weight;
  at::Tensor out;
  for (const Rect& r : cover) {
    const at::Tensor y = at::conv2d(padded_input(x, r.pad(k)), rect_weight(wm, r),
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
  const bool masked = masks_inside(cover, taps, center_mask);
  const at::Tensor mask = masked ? tap_mask(weight, taps, center_mask) : at::Tensor();
  const at::Tensor wm = masked ? weight * mask : weight;
  at::Tensor grad_x, grad_w;
  if (need_weight) grad_w = at::zeros_like(weight, at::MemoryFormat::Contiguous);
  for (const Rect& r : cover) {
    const std::vector<int64_t> pad = r.pad(k);
    auto [gxp, gw, gb] = at::convolution_backward(
        g, padded_input(x, pad), rect_weight(wm, r), std::nullopt, {1, 1}, {0, 0}, {1, 1}, false,
        {0, 0}, 1, {need_input, need_weight, false});
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
    if (need_weight) grad_w.slice(2, r.r0, r.r1).slice(3, r.c0, r.c1).copy_(gw);
  }
  if (need_input && !grad_x.defined()) grad_x = at::zeros_like(x);
  if (need_weight && masked) grad_w.mul_(mask);
  return {need_input ? channels_last(grad_x) : x.new_empty({0}),
          need_weight ? grad_w : weight.new_empty({0})};
}

}  // namespace genmodels
