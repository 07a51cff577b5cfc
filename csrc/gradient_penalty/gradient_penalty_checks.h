#pragma once
// Argument checks and layout rules shared by the CPU and CUDA entry points of gradient_penalty.
#include <ATen/ATen.h>

#include "common/checks.h"

namespace genmodels {

// float64 grads accumulate (and keep their norms) in float64, every other dtype in float32.
inline at::ScalarType gradient_penalty_acc_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_gradient_penalty_inputs(const at::Tensor& grads) {
  TORCH_CHECK(grads.dim() >= 1, "grads must have a batch dimension, got a 0-d tensor");
  check_floating(grads, "grads");
}

inline void check_gradient_penalty_grads(const at::Tensor& grad_penalty,
                                         const at::Tensor& grad_norm, const at::Tensor& grads,
                                         const at::Tensor& norm) {
  const at::ScalarType acc = gradient_penalty_acc_type(grads.scalar_type());
  const int64_t rows = grads.size(0);
  check_same_dtype(grad_penalty, grads, "grad_penalty", "grads");
  check_same_device(grad_penalty, grads, "grad_penalty", "grads");
  check_same_device(grad_norm, grads, "grad_norm", "grads");
  check_same_device(norm, grads, "norm", "grads");
  TORCH_CHECK(grad_norm.scalar_type() == acc, "grad_norm must have dtype ", acc, ", got ",
              grad_norm.scalar_type());
  TORCH_CHECK(norm.scalar_type() == acc, "norm must have dtype ", acc, ", got ",
              norm.scalar_type());
  TORCH_CHECK(grad_penalty.numel() == rows, "grad_penalty must have ", rows,
              " elements, got ", grad_penalty.numel());
  TORCH_CHECK(grad_norm.numel() == rows, "grad_norm must have ", rows, " elements, got ",
              grad_norm.numel());
  TORCH_CHECK(norm.numel() == rows, "norm must have ", rows, " elements, got ", norm.numel());
}

// Every sample of a contiguous or channels_last tensor is one dense block of numel / B
// elements at offset b * numel / B, and the per-sample norm does not depend on the order
// inside a block: such tensors are read in place. Anything else is made contiguous.
inline at::Tensor gradient_penalty_dense_rows(const at::Tensor& grads) {
  if (grads.is_contiguous()) return grads;
  if (grads.dim() == 4 && grads.is_contiguous(at::MemoryFormat::ChannelsLast)) return grads;
  if (grads.dim() == 5 && grads.is_contiguous(at::MemoryFormat::ChannelsLast3d)) return grads;
  return grads.contiguous();
}

}  // namespace genmodels
