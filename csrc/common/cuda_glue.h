#pragma once
// Torch side of the CUDA launchers: dtype mapping and error checks (built only with CUDA).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>

#include "common/cuda_dtype.h"

namespace genmodels {

inline DType to_dtype(at::ScalarType type) {
  switch (type) {
    case at::kHalf: return DType::kFloat16;
    case at::kBFloat16: return DType::kBFloat16;
    case at::kFloat: return DType::kFloat32;
    case at::kDouble: return DType::kFloat64;
    default: TORCH_CHECK(false, "unsupported dtype ", type);
  }
}

inline const void* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr() : nullptr;
}

}  // namespace genmodels
