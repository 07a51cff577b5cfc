// CPU kernels of the Diagonal LSTM: one step per anti-diagonal r + j = d (the skewed map's
// columns), run by the shared recurrence engine (common/lstm_recurrence_cpu.h): per step
// one GEMM [B*n, 2C] x [2C, 4C] over the above and left neighbours' h, then the cell.
#include "diagonal_lstm/diagonal_lstm.h"

#include <algorithm>

#include "common/lstm_checks.h"
#include "common/lstm_recurrence_cpu.h"

namespace genmodels {
namespace {

// Logical column j is physical column j, or W - 1 - j under reverse: the mirror is only
// in these indices.
LstmPlan diagonal_plan(int64_t H, int64_t W, bool reverse) {
  LstmPlan plan;
  plan.positions = H * W;
  plan.taps = 2;
  auto at = [&](int64_t r, int64_t j) { return r * W + (reverse ? W - 1 - j : j); };
  for (int64_t d = 0; d + 1 < H + W; ++d) {
    plan.step_begin.push_back(static_cast<int64_t>(plan.pos.size()));
    for (int64_t r = std::max<int64_t>(0, d - W + 1); r <= std::min(H - 1, d); ++r) {
      const int64_t j = d - r;
      plan.pos.push_back(at(r, j));
      plan.tap_src.push_back(r > 0 ? at(r - 1, j) : -1);
      plan.tap_src.push_back(j > 0 ? at(r, j - 1) : -1);
      plan.cell_src.push_back(j > 0 ? at(r, j - 1) : -1);
    }
  }
  plan.step_begin.push_back(static_cast<int64_t>(plan.pos.size()));
  return plan;
}

void check_diagonal(const at::Tensor& gates_x, const at::Tensor& weight,
                    const std::optional<at::Tensor>& bias) {
  check_lstm_inputs(gates_x, weight, bias);
  check_device_type(gates_x, at::kCPU, "gates_x");
  TORCH_CHECK(weight.size(2) == 2, "weight must be [4C, C, 2] (above, left), got kernel size ",
              weight.size(2));
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> diagonal_lstm_forward_cpu(
    const at::Tensor& gates_x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    bool reverse) {
  check_diagonal(gates_x, weight, bias);
  return lstm_forward_cpu(diagonal_plan(gates_x.size(2), gates_x.size(3), reverse), gates_x,
                          weight, bias);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> diagonal_lstm_backward_cpu(
    const at::Tensor& grad_h, const at::Tensor& gates_x, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, const at::Tensor& h, const at::Tensor& c,
    bool reverse) {
  check_diagonal(gates_x, weight, bias);
  check_lstm_states(gates_x, grad_h, h, c);
  return lstm_backward_cpu(diagonal_plan(gates_x.size(2), gates_x.size(3), reverse), grad_h,
                           gates_x, weight, bias, h, c);
}

}  // namespace genmodels
