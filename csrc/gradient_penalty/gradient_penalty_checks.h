#pragma once
// Argument checks and layout rules shared by the CPU and CUDA entry points of gradient_penalty.
#include <ATen/ATen.h>

#include "common/checks.h"
#include "gradient_penalty/gradient_penalty.h"

#include <string>

namespace genmodels {

// float64 grads accumulate (and keep their norms) in float64, every other dtype in float32.
inline at::ScalarType gradient_penalty_acc_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_gradient_penalty_inputs(const at::Tensor& grads) {
  TORCH_CHECK(grads.dim() >= 1, "grads must have a batch dimension, got a 0-d tensor");
  check_floating(grads, "grads");
}

inline GpReduction parse_gradient_penalty_reduction(const std::string& reduction) {
  if (reduction == "none") return GpReduction::None;
  if (reduction == "sum") return GpReduction::Sum;
  TORCH_CHECK(reduction == "mean", "reduction must be one of ('none', 'sum', 'mean'), got '",
              reduction, "'");
  return GpReduction::Mean;
}

// grad_penalty: grads' dtype, `penalty_numel` elements (rows, or 1 for a reduced output);
// grad_norm and norm: the accumulation dtype, rows elements. The eager path passes an
// undefined grad_penalty or grad_norm for a zero gradient.
inline void check_gradient_penalty_grads(const at::Tensor& grad_penalty,
                                         const at::Tensor& grad_norm, const at::Tensor& grads,
                                         const at::Tensor& norm, int64_t penalty_numel) {
  const at::ScalarType acc = gradient_penalty_acc_type(grads.scalar_type());
  const int64_t rows = grads.size(0);
  if (grad_penalty.defined()) {
    check_same_dtype(grad_penalty, grads, "grad_penalty", "grads");
    check_same_device(grad_penalty, grads, "grad_penalty", "grads");
    TORCH_CHECK(grad_penalty.numel() == penalty_numel, "grad_penalty must have ", penalty_numel,
                " elements, got ", grad_penalty.numel());
  }
  if (grad_norm.defined()) {
    check_same_device(grad_norm, grads, "grad_norm", "grads");
    TORCH_CHECK(grad_norm.scalar_type() == acc, "grad_norm must have dtype ", acc, ", got ",
                grad_norm.scalar_type());
    TORCH_CHECK(grad_norm.numel() == rows, "grad_norm must have ", rows, " elements, got ",
                grad_norm.numel());
  }
  check_same_device(norm, grads, "norm", "grads");
  TORCH_CHECK(norm.scalar_type() == acc, "norm must have dtype ", acc, ", got ",
              norm.scalar_type());
  TORCH_CHECK(norm.numel() == rows, "norm must have ", rows, " elements, got ", norm.numel());
}

inline void check_gradient_penalty_grads(const at::Tensor& grad_penalty,
                                         const at::Tensor& grad_norm, const at::Tensor& grads,
                                         const at::Tensor& norm) {
  check_gradient_penalty_grads(grad_penalty, grad_norm, grads, norm, grads.size(0));
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
