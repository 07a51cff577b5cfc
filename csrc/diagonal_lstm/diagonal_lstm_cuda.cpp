// Torch glue of the diagonal_lstm CUDA kernels: checks, then the shared step loop
// (common/lstm_recurrence_cuda.h) with this op's plan and cell launchers.
#include "diagonal_lstm/diagonal_lstm.h"

#include "common/lstm_recurrence_cuda.h"
#include "diagonal_lstm/diagonal_lstm_cuda.h"
#include "diagonal_lstm/diagonal_lstm_plan.h"

namespace genmodels {

std::tuple<at::Tensor, at::Tensor, at::Tensor> diagonal_lstm_forward_cuda(
    const at::Tensor& gates_x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    bool reverse) {
  check_diagonal_lstm(gates_x, weight, bias);
  check_device_type(gates_x, at::kCUDA, "gates_x");
  const LstmPlan plan = diagonal_plan(gates_x.size(2), gates_x.size(3), reverse);
  return lstm_forward_cuda(plan, gates_x, weight, bias, &diagonal_lstm_cell_forward_launch);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> diagonal_lstm_backward_cuda(
    const at::Tensor& grad_h, const at::Tensor& gates_x, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, const at::Tensor& h, const at::Tensor& c,
    bool reverse) {
  check_diagonal_lstm(gates_x, weight, bias);
  check_device_type(gates_x, at::kCUDA, "gates_x");
  check_lstm_states(gates_x, grad_h, h, c);
  const LstmPlan plan = diagonal_plan(gates_x.size(2), gates_x.size(3), reverse);
  return lstm_backward_cuda(plan, grad_h, gates_x, weight, bias, h, c,
                            &diagonal_lstm_cell_backward_launch);
}

}  // namespace genmodels
