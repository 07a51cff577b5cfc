#pragma once
// Conversions between a tensor's storage type and the float tiles the CPU kernels compute
// in (float16 and bfloat16 are computed in float32).
#include <cstdint>

namespace genmodels {

template <typename scalar_t>
inline void load_tile(const scalar_t* src, int64_t count, float* dst) {
  for (int64_t i = 0; i < count; ++i) dst[i] = static_cast<float>(src[i]);
}

template <typename scalar_t>
inline void store_tile(const float* src, int64_t count, scalar_t* dst) {
  for (int64_t i = 0; i < count; ++i) dst[i] = static_cast<scalar_t>(src[i]);
}

}  // namespace genmodels
