#pragma once
// Entry points of the Diagonal LSTM recurrence (PixelRNN; spec:
// python/genmodels/ops/diagonal_lstm.py).
//
// gates_x [B, 4C, H, W] (gates i, f, g, o), weight [4C, C, 2], bias [4C] or none. The state
// at (r, j) reads h(r - 1, j) through weight[:, :, 0] and h(r, j - 1) through
// weight[:, :, 1] (zero outside the image), and its cell state continues from (r, j - 1);
// reverse mirrors it left-right (j + 1 instead of j - 1). Positions of one anti-diagonal
// are one step; the skew is index arithmetic. Outputs and backward as in row_lstm.h.
#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace genmodels {

std::tuple<at::Tensor, at::Tensor, at::Tensor> diagonal_lstm_forward_cpu(
    const at::Tensor& gates_x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    bool reverse);
std::tuple<at::Tensor, at::Tensor, at::Tensor> diagonal_lstm_backward_cpu(
    const at::Tensor& grad_h, const at::Tensor& gates_x, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, const at::Tensor& h, const at::Tensor& c,
    bool reverse);

#ifdef WITH_CUDA
std::tuple<at::Tensor, at::Tensor, at::Tensor> diagonal_lstm_forward_cuda(
    const at::Tensor& gates_x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    bool reverse);
std::tuple<at::Tensor, at::Tensor, at::Tensor> diagonal_lstm_backward_cuda(
    const at::Tensor& grad_h, const at::Tensor& gates_x, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, const at::Tensor& h, const at::Tensor& c,
    bool reverse);
#endif

}  // namespace genmodels
