#pragma once
// The residual block as a few large passes, shared by the CPU and CUDA entry points
// (ATen only; the device supplies the masked convolution and the fused ReLU + dropout):
// the 1x1 convolutions are single GEMMs over the N * H * W pixel rows of the channels_last
// tensors (at::addmm: MKL/oneDNN on CPU, cuBLAS on CUDA), the middle one is masked_conv2d's
// kernel, and ReLU, dropout, the ReLU masks and the residual add are fused into the passes
// around them. Saved for backward: r1 and r2 = dropout(relu(middle)) (see
// pixelcnn_residual_block.h); relu(x) is recomputed, or handed from the forward to the
// backward in place of x (the CPU autograd node: x > 0 exactly where relu(x) > 0).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include <optional>
#include <tuple>
#include <vector>

#include "common/checks.h"
#include "pixelcnn_residual_block/pixelcnn_residual_block.h"

namespace genmodels {

struct ResidualBlockDevice {
  at::Tensor (*conv_forward)(const at::Tensor&, const at::Tensor&, const OptTensor&,
                             const std::vector<int64_t>&, const OptTensor&);
  std::tuple<at::Tensor, at::Tensor> (*conv_backward)(const at::Tensor&, const at::Tensor&,
                                                      const at::Tensor&,
                                                      const std::vector<int64_t>&,
                                                      const OptTensor&, bool, bool);
  // t (channels_last) -> dropout(relu(t)) (relu(t) written into t itself for p == 0)
  at::Tensor (*relu_dropout_forward)(at::Tensor& t, double p, int64_t seed, int64_t offset);
  // t <- where(r > 0, t, 0) (+ g when defined) in place, over contiguous rows: a ReLU's
  // backward without a new tensor, and the input gradient's last two steps in one pass;
  // null: threshold_backward (then add_).
  void (*relu_grad_add)(at::Tensor& t, const at::Tensor& r, const at::Tensor& g);
  // Whether independent parts of the backward may run on host threads side by side (not
  // on CUDA, whose current stream is per host thread).
  bool side_by_side;
};

// Runs a() and b(), two independent parts of the backward, side by side on two threads,
// each single-threaded (a GEMM inside a parallel region does not split again): for the
// small GEMMs of a block that beats splitting each of them over both threads in turn.
// Each output is written by one of them, so the result does not depend on the timing.
// t <- the gradient through a ReLU whose output is r (rows), plus g when defined: in place
// in one pass when the device can.
inline void relu_grad(const ResidualBlockDevice& dev, at::Tensor& t, const at::Tensor& r,
                      const at::Tensor& g = at::Tensor()) {
  if (dev.relu_grad_add != nullptr && t.is_contiguous() && r.is_contiguous() &&
      (!g.defined() || g.is_contiguous())) {
    dev.relu_grad_add(t, r, g);
    return;
  }
  t = at::threshold_backward(t, r, 0);
  if (g.defined()) t.add_(g);
}

template <class A, class B>
void run_side_by_side(const ResidualBlockDevice& dev, const A& a, const B& b) {
  if (!dev.side_by_side || at::get_num_threads() < 2 || at::in_parallel_region()) {
    a();
    b();
    return;
  }
  at::parallel_for(0, 2, 1, [&](int64_t begin, int64_t end) {
    // Grad mode is per thread and on by default in a worker; backward runs without it.
    const c10::NoGradGuard no_grad;
    for (int64_t i = begin; i < end; ++i) {
      if (i == 0) {
        a();
      } else {
        b();
      }
    }
  });
}

// The factor of kept elements in the gradient of t -> dropout(relu(t)): 1 / (1 - p). The
// gradient is that factor times the incoming one where d = dropout(relu(t)) is not 0
// (d >= 0; d == 0 exactly where the ReLU or the dropout zeroed the element), else 0.
inline double dropout_grad_scale(double p) {
  if (p == 0.0) return 1.0;
  return p < 1.0 ? 1.0 / (1.0 - p) : 0.0;
}

inline at::Tensor block_channels_last(const at::Tensor& t) {
  return t.contiguous(at::MemoryFormat::ChannelsLast);
}

// [N, C, H, W] channels_last -> its [N * H * W, C] pixel rows (a view).
inline at::Tensor block_rows(const at::Tensor& t) {
  return t.permute({0, 2, 3, 1}).reshape({-1, t.size(1)});
}

// [N * H * W, C] rows -> the [N, C, H, W] channels_last image (a view).
inline at::Tensor block_image(const at::Tensor& rows, const at::Tensor& like) {
  return rows.view({like.size(0), like.size(2), like.size(3), rows.size(1)})
      .permute({0, 3, 1, 2});
}

// A 1x1 weight as its [C_out, C_in] matrix with the centre mask applied (filled, not
// multiplied: a NaN or Inf on a masked pair must not survive as 0 * NaN).
inline at::Tensor block_matrix(const at::Tensor& w, const OptTensor& cm) {
  const at::Tensor m = w.reshape({w.size(0), w.size(1)});
  return cm.has_value() ? m.masked_fill(cm->eq(0), 0) : m;
}

inline at::Tensor block_weight_grad(const at::Tensor& g, const at::Tensor& w,
                                    const OptTensor& cm) {
  at::Tensor out = cm.has_value() ? g.masked_fill(cm->eq(0), 0) : g;
  return out.reshape(w.sizes()).contiguous();
}

inline void check_block_inputs(const at::Tensor& x, const at::Tensor& w1, const OptTensor& b1,
                               const at::Tensor& w2, const OptTensor& b2, const at::Tensor& w3,
                               const OptTensor& b3, double p) {
  check_floating(x, "x");
  TORCH_CHECK(x.dim() == 4, "x must be [N, C, H, W], got ", x.sizes());
  const int64_t c = x.size(1);
  TORCH_CHECK(w1.dim() == 4 && w1.size(1) == c && w1.size(2) == 1 && w1.size(3) == 1,
              "w1 must be [C2, ", c, ", 1, 1], got ", w1.sizes());
  const int64_t c2 = w1.size(0);
  TORCH_CHECK(w2.dim() == 4 && w2.size(0) == c2 && w2.size(1) == c2 && w2.size(2) == w2.size(3) &&
                  w2.size(2) % 2 == 1,
              "w2 must be [", c2, ", ", c2, ", k, k] with k odd, got ", w2.sizes());
  TORCH_CHECK(w3.dim() == 4 && w3.size(0) == c && w3.size(1) == c2 && w3.size(2) == 1 &&
                  w3.size(3) == 1,
              "w3 must be [", c, ", ", c2, ", 1, 1], got ", w3.sizes());
  const std::pair<const OptTensor*, int64_t> biases[] = {{&b1, c2}, {&b2, c2}, {&b3, c}};
  const char* names[] = {"b1", "b2", "b3"};
  for (int i = 0; i < 3; ++i) {
    const OptTensor& b = *biases[i].first;
    if (!b.has_value()) continue;
    TORCH_CHECK(b->dim() == 1 && b->size(0) == biases[i].second, names[i], " must be [",
                biases[i].second, "], got ", b->sizes());
    check_same_dtype(*b, x, names[i], "x");
    check_same_device(*b, x, names[i], "x");
  }
  for (const auto& [w, name] : {std::pair{&w1, "w1"}, {&w2, "w2"}, {&w3, "w3"}}) {
    check_same_dtype(*w, x, name, "x");
    check_same_device(*w, x, name, "x");
  }
  TORCH_CHECK(p >= 0.0 && p <= 1.0, "p must be a number in [0, 1], got ", p);
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> residual_block_forward(
    const ResidualBlockDevice& dev, const at::Tensor& x_in, const at::Tensor& w1,
    const OptTensor& b1, const at::Tensor& w2, const OptTensor& b2, const at::Tensor& w3,
    const OptTensor& b3, const std::vector<int64_t>& taps, const OptTensor& cm1,
    const OptTensor& cm2, const OptTensor& cm3, double p, int64_t seed, int64_t offset,
    at::Tensor* relu_x = nullptr) {
  check_block_inputs(x_in, w1, b1, w2, b2, w3, b3, p);
  const at::Tensor x = block_channels_last(x_in);
  const at::Tensor xr = block_rows(x);
  const at::Tensor m1 = block_matrix(w1, cm1).t(), m3 = block_matrix(w3, cm3).t();
  const at::Tensor a = at::relu(xr);
  at::Tensor r1 = b1.has_value() ? at::addmm(*b1, a, m1) : at::mm(a, m1);
  r1.relu_();
  const at::Tensor r1_image = block_image(r1, x);
  at::Tensor r2 = block_channels_last(dev.conv_forward(r1_image, w2, b2, taps, cm2));
  const at::Tensor d = block_channels_last(dev.relu_dropout_forward(r2, p, seed, offset));
  // out = x + b3 in one pass, then the GEMM accumulates into it (beta = 1, no copy).
  at::Tensor out = b3.has_value() ? at::add(xr, *b3) : xr.clone();
  out.addmm_(block_rows(d), m3);
  if (relu_x != nullptr) *relu_x = block_image(a, x);
  return {block_image(out, x), r1_image, d};
}

inline std::vector<at::Tensor> residual_block_backward(
    const ResidualBlockDevice& dev, const at::Tensor& grad_out, const at::Tensor& x_in,
    const at::Tensor& w1, const at::Tensor& w2, const at::Tensor& w3, const at::Tensor& r1,
    const at::Tensor& r2, const std::vector<int64_t>& taps, const OptTensor& cm1,
    const OptTensor& cm2, const OptTensor& cm3, double p, const std::vector<bool>& need,
    bool x_is_relu = false) {
  TORCH_CHECK(need.size() == 7, "need must have 7 entries (x, w1, b1, w2, b2, w3, b3)");
  check_same_shape(grad_out, x_in, "grad_out", "x");
  std::vector<at::Tensor> grads(7);
  const at::Tensor x = block_channels_last(x_in);
  const at::Tensor g = block_rows(block_channels_last(grad_out));
  const at::Tensor m1 = block_matrix(w1, cm1), m3 = block_matrix(w3, cm3);
  const at::Tensor d = block_channels_last(r2);
  const bool need_g2 = need[0] || need[1] || need[2] || need[3] || need[4];
  at::Tensor g2;
  run_side_by_side(
      dev,
      [&] {
        if (need[5]) grads[5] = block_weight_grad(at::mm(g.t(), block_rows(d)), w3, cm3);
        if (need[6]) grads[6] = g.sum(0);
      },
      [&] {
        if (!need_g2) return;
        // The dropout's scale goes into the small weight matrix, not over the gradient.
        const double scale = dropout_grad_scale(p);
        at::Tensor gd = at::mm(g, scale == 1.0 ? m3 : m3 * scale);
        relu_grad(dev, gd, block_rows(d));
        g2 = block_image(gd, d);
        if (need[4]) grads[4] = block_rows(g2).sum(0);
      });
  if (!need_g2) return grads;
  const bool need_r1 = need[0] || need[1] || need[2];
  auto [g_r1, g_w2] = dev.conv_backward(g2, r1, w2, taps, cm2, need_r1, need[3]);
  if (need[3]) grads[3] = g_w2;
  if (!need_r1) return grads;
  const at::Tensor r1_rows = block_rows(block_channels_last(r1));
  at::Tensor g1 = block_rows(block_channels_last(g_r1));
  relu_grad(dev, g1, r1_rows);
  if (need[2]) grads[2] = g1.sum(0);
  const at::Tensor xr = block_rows(x);
  run_side_by_side(
      dev,
      [&] {
        if (!need[1]) return;
        const at::Tensor a = x_is_relu ? xr : at::relu(xr);
        grads[1] = block_weight_grad(at::mm(g1.t(), a), w1, cm1);
      },
      [&] {
        if (!need[0]) return;
        at::Tensor gx = at::mm(g1, m1);
        relu_grad(dev, gx, xr, g);
        grads[0] = block_image(gx, x);
      });
  return grads;
}

}  // namespace genmodels
