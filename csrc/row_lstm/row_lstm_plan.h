#pragma once
// Checks and steps of the row_lstm recurrence (common/lstm_layout.h), shared by its
// CPU and CUDA glue.
#include <algorithm>

#include "common/lstm_checks.h"
#include "common/lstm_layout.h"

namespace genmodels {

inline LstmPlan row_plan(int64_t H, int64_t W, int64_t k) {
  LstmPlan plan;
  plan.positions = H * W;
  plan.taps = k;
  const int64_t pad = k / 2;
  for (int64_t r = 0; r < H; ++r) {
    plan.step_begin.push_back(static_cast<int64_t>(plan.pos.size()));
    for (int64_t j = 0; j < W; ++j) {
      plan.pos.push_back(r * W + j);
      for (int64_t t = 0; t < k; ++t) {
        const int64_t js = j + t - pad;
        plan.tap_src.push_back(r > 0 && js >= 0 && js < W ? (r - 1) * W + js : -1);
      }
      plan.cell_src.push_back(r > 0 ? (r - 1) * W + j : -1);
    }
  }
  plan.step_begin.push_back(static_cast<int64_t>(plan.pos.size()));
  return plan;
}

inline void check_row_lstm(const at::Tensor& gates_x, const at::Tensor& weight,
                           const std::optional<at::Tensor>& bias) {
  check_lstm_inputs(gates_x, weight, bias);
  TORCH_CHECK(weight.size(2) % 2 == 1, "weight's kernel size k must be odd, got ",
              weight.size(2));
}

}  // namespace genmodels
