// Torch glue of the row_lstm CUDA kernels: checks, then the shared step loop
// (common/lstm_recurrence_cuda.h) with this op's plan and cell launchers.
#include "row_lstm/row_lstm.h"

#include "common/lstm_recurrence_cuda.h"
#include "row_lstm/row_lstm_cuda.h"
#include "row_lstm/row_lstm_plan.h"

namespace genmodels {

std::tuple<at::Tensor, at::Tensor, at::Tensor> row_lstm_forward_cuda(
    const at::Tensor& gates_x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  check_row_lstm(gates_x, weight, bias);
  check_device_type(gates_x, at::kCUDA, "gates_x");
  const LstmPlan plan = row_plan(gates_x.size(2), gates_x.size(3), weight.size(2));
  return lstm_forward_cuda(plan, gates_x, weight, bias, &row_lstm_cell_forward_launch);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> row_lstm_backward_cuda(
    const at::Tensor& grad_h, const at::Tensor& gates_x, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, const at::Tensor& h, const at::Tensor& c) {
  check_row_lstm(gates_x, weight, bias);
  check_device_type(gates_x, at::kCUDA, "gates_x");
  check_lstm_states(gates_x, grad_h, h, c);
  const LstmPlan plan = row_plan(gates_x.size(2), gates_x.size(3), weight.size(2));
  return lstm_backward_cuda(plan, grad_h, gates_x, weight, bias, h, c,
                            &row_lstm_cell_backward_launch);
}

}  // namespace genmodels
