#pragma once
// What the PixelRNN recurrences (row_lstm, diagonal_lstm) share on every device: the plan
// of their steps and the layouts of their state.
//
// Both ops are LSTMs over image positions that run in steps: the positions of one step
// (a row, an anti-diagonal) depend only on earlier steps, through `taps` state-to-state
// taps (a position's source of tap t, or none) and one cell-state predecessor.
// State is kept in the accumulation type (float32 for float16/bfloat16/float32, float64
// for float64) in position-major buffers [B, H*W, C] (h, c) and [B, H*W, 4C] (gates).
#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <vector>

namespace genmodels {

struct LstmPlan {
  int64_t positions = 0;  // H * W
  int64_t taps = 0;
  // Step s holds pos[step_begin[s] .. step_begin[s + 1]).
  std::vector<int64_t> step_begin;
  std::vector<int64_t> pos;       // flat position r * W + j
  std::vector<int64_t> tap_src;   // [pos.size() * taps]: source position or -1
  std::vector<int64_t> cell_src;  // [pos.size()]: cell predecessor or -1
  int64_t steps() const { return static_cast<int64_t>(step_begin.size()) - 1; }
  int64_t max_step() const {
    int64_t m = 0;
    for (int64_t s = 0; s < steps(); ++s) m = std::max(m, step_begin[s + 1] - step_begin[s]);
    return m;
  }
};

// The accumulation type of gates_x's dtype.
inline at::ScalarType lstm_acc_type(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// wt[t * C + c, o] = weight[o, c, t]: the GEMM's right-hand side.
inline at::Tensor lstm_weight_rhs(const at::Tensor& weight, at::ScalarType acc) {
  const int64_t G = weight.size(0), C = weight.size(1), taps = weight.size(2);
  return weight.permute({2, 1, 0}).to(acc).contiguous().view({taps * C, G});
}

// [B, 4C, H, W] in any layout -> a fresh [B, H, W, 4C] tensor of type acc, plus the bias
// when there is one (the kernels then add only the state-to-state part).
inline at::Tensor lstm_position_major(const at::Tensor& t, at::ScalarType acc,
                                      const std::optional<at::Tensor>& bias = std::nullopt) {
  at::Tensor out = at::empty({t.size(0), t.size(2), t.size(3), t.size(1)},
                             t.options().dtype(acc));
  out.copy_(t.permute({0, 2, 3, 1}));
  if (bias.has_value()) out.add_(bias->to(acc));
  return out;
}

// A fresh [B, C, H, W] tensor of `like`'s dtype and memory format holding the
// position-major [B, H, W, C] buffer t.
// channels_last when `like` is channels_last and not also contiguous (the Python fake
// kernels apply the same rule), else contiguous.
inline at::Tensor lstm_image_major(const at::Tensor& t, const at::Tensor& like) {
  const bool channels_last =
      like.is_contiguous(at::MemoryFormat::ChannelsLast) && !like.is_contiguous();
  const auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  at::Tensor out = at::empty({t.size(0), t.size(3), t.size(1), t.size(2)},
                             like.options().memory_format(format));
  out.copy_(t.permute({0, 3, 1, 2}));
  return out;
}

}  // namespace genmodels
