// CPU kernels of the Row LSTM: one step per row, run by the shared recurrence engine
// (common/lstm_recurrence_cpu.h): per row one GEMM [B*W, k*C] x [k*C, 4C] over the row
// above's h, then the vectorized cell.
#include "row_lstm/row_lstm.h"

#include "common/lstm_checks.h"
#include "common/lstm_recurrence_cpu.h"

namespace genmodels {
namespace {

LstmPlan row_plan(int64_t H, int64_t W, int64_t k) {
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

void check_row(const at::Tensor& gates_x, const at::Tensor& weight,
               const std::optional<at::Tensor>& bias) {
  check_lstm_inputs(gates_x, weight, bias);
  check_device_type(gates_x, at::kCPU, "gates_x");
  TORCH_CHECK(weight.size(2) % 2 == 1, "weight's kernel size k must be odd, got ",
              weight.size(2));
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> row_lstm_forward_cpu(
    const at::Tensor& gates_x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  check_row(gates_x, weight, bias);
  return lstm_forward_cpu(row_plan(gates_x.size(2), gates_x.size(3), weight.size(2)), gates_x,
                          weight, bias);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> row_lstm_backward_cpu(
    const at::Tensor& grad_h, const at::Tensor& gates_x, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, const at::Tensor& h, const at::Tensor& c) {
  check_row(gates_x, weight, bias);
  check_lstm_states(gates_x, grad_h, h, c);
  return lstm_backward_cpu(row_plan(gates_x.size(2), gates_x.size(3), weight.size(2)), grad_h,
                           gates_x, weight, bias, h, c);
}

}  // namespace genmodels
