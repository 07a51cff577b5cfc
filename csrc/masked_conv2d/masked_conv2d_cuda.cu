// CUDA kernels of masked_conv2d: the active-tap im2col feeding the cuBLAS GEMM of the
// torch glue, and a direct kernel for thin input layers (C_in of 1 to 4), where an im2col
// row would be only a few elements wide and the GEMM tiny in K.
#include <algorithm>

#include "common/cuda_utils.cuh"
#include "masked_conv2d/masked_conv2d_cuda.h"

namespace genmodels {
namespace {

constexpr int kThreads = 256;

inline int grid_for(int64_t total) {
  return static_cast<int>(std::min<int64_t>(ceil_div(total, kThreads), 65535 * 8));
}

// One element per thread (grid-stride); E is an unsigned integer of the element's size,
// so the copy is dtype-agnostic. Consecutive threads write consecutive channels.
template <typename E>
__global__ void im2col_kernel(const E* __restrict__ src, E* __restrict__ cols, int64_t h,
                              int64_t w, int64_t c, int64_t total, const TapTable taps) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    const int64_t ch = i % c;
    const int64_t rest = i / c;
    const int t = static_cast<int>(rest % taps.count);
    const int64_t p = rest / taps.count;
    const int dy = taps.dy[t], dx = taps.dx[t];
    const int64_t yy = (p / w) % h + dy, xx = p % w + dx;
    E v = 0;
    if (yy >= 0 && yy < h && xx >= 0 && xx < w) v = src[(p + dy * w + dx) * c + ch];
    cols[i] = v;
  }
}

// One output element (pixel, output channel) per thread, accumulated in float (double
// for float64) over the kept taps and the few input channels.
template <typename T>
__global__ void direct_forward_kernel(const T* __restrict__ x, const T* __restrict__ wp,
                                      const T* __restrict__ bias, T* __restrict__ out,
                                      int64_t h, int64_t w, int64_t c_in, int64_t c_out,
                                      int64_t total, const TapTable taps) {
  using A = typename AccType<T>::type;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    const int64_t co = i % c_out;
    const int64_t p = i / c_out;
    const int64_t y = (p / w) % h, xc = p % w;
    A acc = bias != nullptr ? to_acc<T, A>(bias[co]) : A(0);
    for (int t = 0; t < taps.count; ++t) {
      const int dy = taps.dy[t], dx = taps.dx[t];
      if (y + dy < 0 || y + dy >= h || xc + dx < 0 || xc + dx >= w) continue;
      const T* src = x + (p + dy * w + dx) * c_in;
      const T* wr = wp + static_cast<int64_t>(t) * c_in * c_out + co;
      for (int64_t ci = 0; ci < c_in; ++ci) acc += to_acc<T, A>(src[ci]) * to_acc<T, A>(wr[ci * c_out]);
    }
    out[i] = from_acc<T, A>(acc);
  }
}

template <typename T>
struct Bits;
template <> struct Bits<__half> { using type = uint16_t; };
template <> struct Bits<__nv_bfloat16> { using type = uint16_t; };
template <> struct Bits<float> { using type = uint32_t; };
template <> struct Bits<double> { using type = uint64_t; };

}  // namespace

cudaError_t masked_conv2d_im2col_launch(DType dtype, const void* src, void* cols, int64_t n,
                                        int64_t h, int64_t w, int64_t c, const TapTable& taps,
                                        cudaStream_t stream) {
  const int64_t total = n * h * w * taps.count * c;
  if (total == 0) return cudaSuccess;
  dispatch_dtype(dtype, [&](auto tag) {
    using E = typename Bits<decltype(tag)>::type;
    im2col_kernel<E><<<grid_for(total), kThreads, 0, stream>>>(
        static_cast<const E*>(src), static_cast<E*>(cols), h, w, c, total, taps);
  });
  return cudaGetLastError();
}

cudaError_t masked_conv2d_direct_forward_launch(DType dtype, const void* x, const void* wp,
                                                const void* bias, void* out, int64_t n,
                                                int64_t h, int64_t w, int64_t c_in,
                                                int64_t c_out, const TapTable& taps,
                                                cudaStream_t stream) {
  const int64_t total = n * h * w * c_out;
  if (total == 0) return cudaSuccess;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    direct_forward_kernel<T><<<grid_for(total), kThreads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(wp), static_cast<const T*>(bias),
        static_cast<T*>(out), h, w, c_in, c_out, total, taps);
  });
  return cudaGetLastError();
}

}  // namespace genmodels
