#pragma once
// Argument checks shared by the entry points of the PixelRNN recurrences (row_lstm,
// diagonal_lstm). Python checks first with the same messages.
#include <ATen/ATen.h>

#include <optional>

#include "common/checks.h"

namespace genmodels {

// gates_x [B, 4C, H, W]; weight [4C, C, k]; bias [4C] or none; all of one dtype and device.
inline void check_lstm_inputs(const at::Tensor& gates_x, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias) {
  check_floating(gates_x, "gates_x");
  TORCH_CHECK(gates_x.dim() == 4, "gates_x must be 4-D [B, 4C, H, W], got ", gates_x.dim(),
              "-D");
  const int64_t G = gates_x.size(1);
  TORCH_CHECK(G > 0 && G % 4 == 0,
              "gates_x must have 4C channels (gates i, f, g, o), a positive multiple of 4, got ",
              G);
  TORCH_CHECK(weight.dim() == 3, "weight must be 3-D [4C, C, k], got ", weight.dim(), "-D");
  check_same_device(weight, gates_x, "weight", "gates_x");
  check_same_dtype(weight, gates_x, "weight", "gates_x");
  TORCH_CHECK(weight.size(0) == G && weight.size(1) == G / 4, "weight must be [", G, ", ", G / 4,
              ", k] for gates_x with ", G, " channels, got ", weight.sizes());
  if (bias.has_value()) {
    check_same_device(*bias, gates_x, "bias", "gates_x");
    check_same_dtype(*bias, gates_x, "bias", "gates_x");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == G, "bias must be [", G, "], got ",
                bias->sizes());
  }
}

// h and c states saved by forward: [B, H, W, C] in the accumulation type.
inline void check_lstm_states(const at::Tensor& gates_x, const at::Tensor& grad_h,
                              const at::Tensor& h, const at::Tensor& c) {
  const int64_t B = gates_x.size(0), C = gates_x.size(1) / 4;
  const int64_t H = gates_x.size(2), W = gates_x.size(3);
  TORCH_CHECK(grad_h.dim() == 4 && grad_h.size(0) == B && grad_h.size(1) == C &&
                  grad_h.size(2) == H && grad_h.size(3) == W,
              "grad_h must be [", B, ", ", C, ", ", H, ", ", W, "], got ", grad_h.sizes());
  for (const at::Tensor* t : {&h, &c}) {
    TORCH_CHECK(t->dim() == 4 && t->size(0) == B && t->size(1) == H && t->size(2) == W &&
                    t->size(3) == C,
                "saved states must be [", B, ", ", H, ", ", W, ", ", C, "], got ", t->sizes());
  }
  check_same_device(grad_h, gates_x, "grad_h", "gates_x");
}

}  // namespace genmodels
