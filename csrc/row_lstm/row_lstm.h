#pragma once
// Entry points of the Row LSTM recurrence (PixelRNN; spec: python/genmodels/ops/row_lstm.py).
//
// gates_x [B, 4C, H, W] (gates i, f, g, o), weight [4C, C, k] with odd k, bias [4C] or none.
// Row r: pre = gates_x[:, :, r] + conv1d(h[:, :, r - 1], weight, bias, padding k // 2),
// c_r = sigmoid(f) c_{r-1} + sigmoid(i) tanh(g), h_r = sigmoid(o) tanh(c_r), zero state
// above row 0. forward returns (h like gates_x, h state, c state), the states [B, H, W, C]
// in float32 (float64 for float64 inputs); backward takes them back and returns the
// gradients of gates_x, weight and bias (bias's even when there is none).
#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace genmodels {

std::tuple<at::Tensor, at::Tensor, at::Tensor> row_lstm_forward_cpu(
    const at::Tensor& gates_x, const at::Tensor& weight, const std::optional<at::Tensor>& bias);
std::tuple<at::Tensor, at::Tensor, at::Tensor> row_lstm_backward_cpu(
    const at::Tensor& grad_h, const at::Tensor& gates_x, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, const at::Tensor& h, const at::Tensor& c);

#ifdef WITH_CUDA
std::tuple<at::Tensor, at::Tensor, at::Tensor> row_lstm_forward_cuda(
    const at::Tensor& gates_x, const at::Tensor& weight, const std::optional<at::Tensor>& bias);
std::tuple<at::Tensor, at::Tensor, at::Tensor> row_lstm_backward_cuda(
    const at::Tensor& grad_h, const at::Tensor& gates_x, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, const at::Tensor& h, const at::Tensor& c);
#endif

}  // namespace genmodels
