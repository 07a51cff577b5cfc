#pragma once
// Checks and steps of the diagonal_lstm recurrence (common/lstm_layout.h), shared by its
// CPU and CUDA glue.
#include <algorithm>

#include "common/lstm_checks.h"
#include "common/lstm_layout.h"

namespace genmodels {

// Logical column j is physical column j, or W - 1 - j under reverse: the mirror is only
// in these indices.
inline LstmPlan diagonal_plan(int64_t H, int64_t W, bool reverse) {
  LstmPlan plan;
  plan.positions = H * W;
  plan.taps = 2;
  auto flat = [&](int64_t r, int64_t j) { return r * W + (reverse ? W - 1 - j : j); };
  for (int64_t d = 0; d + 1 < H + W; ++d) {
    plan.step_begin.push_back(static_cast<int64_t>(plan.pos.size()));
    for (int64_t r = std::max<int64_t>(0, d - W + 1); r <= std::min(H - 1, d); ++r) {
      const int64_t j = d - r;
      plan.pos.push_back(flat(r, j));
      plan.tap_src.push_back(r > 0 ? flat(r - 1, j) : -1);
      plan.tap_src.push_back(j > 0 ? flat(r, j - 1) : -1);
      plan.cell_src.push_back(j > 0 ? flat(r, j - 1) : -1);
    }
  }
  plan.step_begin.push_back(static_cast<int64_t>(plan.pos.size()));
  return plan;
}

inline void check_diagonal_lstm(const at::Tensor& gates_x, const at::Tensor& weight,
                                const std::optional<at::Tensor>& bias) {
  check_lstm_inputs(gates_x, weight, bias);
  TORCH_CHECK(weight.size(2) == 2, "weight must be [4C, C, 2] (above, left), got kernel size ",
              weight.size(2));
}

}  // namespace genmodels
