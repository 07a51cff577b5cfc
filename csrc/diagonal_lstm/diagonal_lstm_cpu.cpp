// CPU kernels of the Diagonal LSTM: one step per anti-diagonal r + j = d (the skewed map's
// columns), run by the shared recurrence engine (common/lstm_recurrence_cpu.h): per step
// one GEMM [B*n, 2C] x [2C, 4C] over the above and left neighbours' h, then the cell.
#include "diagonal_lstm/diagonal_lstm.h"

#include "common/lstm_recurrence_cpu.h"
#include "diagonal_lstm/diagonal_lstm_plan.h"

namespace genmodels {

std::tuple<at::Tensor, at::Tensor, at::Tensor> diagonal_lstm_forward_cpu(
    const at::Tensor& gates_x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    bool reverse) {
  check_diagonal_lstm(gates_x, weight, bias);
  check_device_type(gates_x, at::kCPU, "gates_x");
  return lstm_forward_cpu(diagonal_plan(gates_x.size(2), gates_x.size(3), reverse), gates_x,
                          weight, bias);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> diagonal_lstm_backward_cpu(
    const at::Tensor& grad_h, const at::Tensor& gates_x, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, const at::Tensor& h, const at::Tensor& c,
    bool reverse) {
  check_diagonal_lstm(gates_x, weight, bias);
  check_device_type(gates_x, at::kCPU, "gates_x");
  check_lstm_states(gates_x, grad_h, h, c);
  return lstm_backward_cpu(diagonal_plan(gates_x.size(2), gates_x.size(3), reverse), grad_h,
                           gates_x, weight, bias, h, c);
}

}  // namespace genmodels
