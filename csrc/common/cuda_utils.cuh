#pragma once
// Torch-free helpers for the .cu files.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common/cuda_dtype.h"

namespace genmodels {

// Float conversions in and out of the storage types; arithmetic happens in float or double.
template <typename T>
__device__ __forceinline__ float to_float(T v) { return static_cast<float>(v); }
template <>
__device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T, typename A>
__device__ __forceinline__ T from_acc(A v) { return static_cast<T>(v); }
template <>
__device__ __forceinline__ __half from_acc<__half, float>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16, float>(float v) {
  return __float2bfloat16_rn(v);
}

template <typename T> struct AccType { using type = float; };
template <> struct AccType<double> { using type = double; };

// Bytes of one accumulator of storage type T (workspace sizing).
template <typename T>
constexpr int64_t acc_bytes() { return sizeof(typename AccType<T>::type); }

template <typename T, typename A>
__device__ __forceinline__ A to_acc(T v) {
  if constexpr (sizeof(A) == sizeof(double)) return static_cast<double>(v);
  else return to_float(v);
}

// Calls f(T{}) with T the storage type of `dtype`.
template <typename F>
void dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat16: f(__half{}); break;
    case DType::kBFloat16: f(__nv_bfloat16{}); break;
    case DType::kFloat32: f(float{}); break;
    case DType::kFloat64: f(double{}); break;
  }
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Scratch bytes of a split row reduction: one accumulator per (row, chunk), none when
// every row fits one block.
inline int64_t split_rows_workspace_bytes(DType dtype, int64_t rows, int64_t n_chunks) {
  if (n_chunks == 1) return 0;
  int64_t bytes = 0;
  dispatch_dtype(dtype, [&](auto tag) { bytes = rows * n_chunks * acc_bytes<decltype(tag)>(); });
  return bytes;
}

}  // namespace genmodels
