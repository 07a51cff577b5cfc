// CPU kernels of the Row LSTM: one step per row, run by the shared recurrence engine
// (common/lstm_recurrence_cpu.h): per row one GEMM [B*W, k*C] x [k*C, 4C] over the row
// above's h, then the vectorized cell.
#include "row_lstm/row_lstm.h"

#include "common/lstm_recurrence_cpu.h"
#include "row_lstm/row_lstm_plan.h"

namespace genmodels {

std::tuple<at::Tensor, at::Tensor, at::Tensor> row_lstm_forward_cpu(
    const at::Tensor& gates_x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  check_row_lstm(gates_x, weight, bias);
  check_device_type(gates_x, at::kCPU, "gates_x");
  return lstm_forward_cpu(row_plan(gates_x.size(2), gates_x.size(3), weight.size(2)), gates_x,
                          weight, bias);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> row_lstm_backward_cpu(
    const at::Tensor& grad_h, const at::Tensor& gates_x, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, const at::Tensor& h, const at::Tensor& c) {
  check_row_lstm(gates_x, weight, bias);
  check_device_type(gates_x, at::kCPU, "gates_x");
  check_lstm_states(gates_x, grad_h, h, c);
  return lstm_backward_cpu(row_plan(gates_x.size(2), gates_x.size(3), weight.size(2)), grad_h,
                           gates_x, weight, bias, h, c);
}

}  // namespace genmodels
