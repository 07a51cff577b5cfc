#pragma once
// Argument checks and layout rules shared by the CPU and CUDA entry points of dropout.
#include <ATen/ATen.h>

#include "common/checks.h"

namespace genmodels {

inline void check_dropout_inputs(const at::Tensor& x, double p) {
  check_floating(x, "x");
  // Written so that NaN fails too.
  TORCH_CHECK(p >= 0.0 && p <= 1.0, "p must be a number in [0, 1], got ", p);
}

// The tensor whose storage the kernels walk: x itself when its elements fill their storage
// span exactly once (any dense permutation, channels_last included), else a contiguous copy.
inline at::Tensor dropout_memory_order(const at::Tensor& x) {
  return x.is_non_overlapping_and_dense() ? x : x.contiguous();
}

// 1 / (1 - p) in double; float kernels round it to float once.
inline double dropout_scale(double p) { return 1.0 / (1.0 - p); }

}  // namespace genmodels
