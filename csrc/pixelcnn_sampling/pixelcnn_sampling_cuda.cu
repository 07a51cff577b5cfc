// CUDA kernel of the cached samplers' convolution at one position. Torch-free: compiled by
// nvcc on any machine.
//
// One block per (image, 128 outputs): each thread owns one output and walks the packed
// rows; the image's input values of a chunk of rows are staged in shared memory once for
// the block.
#include "pixelcnn_sampling/pixelcnn_sampling_cuda.h"

namespace genmodels {
namespace {

constexpr int kThreads = 128;
constexpr int kChunk = 256;

template <typename T>
__global__ void __launch_bounds__(kThreads)
conv_at_kernel(const T* __restrict__ x, int64_t s_b, int64_t s_c, int64_t s_h, int64_t s_w,
               const T* __restrict__ w, int64_t ldw, const T* __restrict__ bias,
               T* __restrict__ out, const int64_t* __restrict__ runs, int64_t n_runs,
               int64_t c_in, int64_t c_out, int64_t i, int64_t j) {
  __shared__ T staged[kChunk];
  const int64_t b = blockIdx.x;
  const int64_t o = static_cast<int64_t>(blockIdx.y) * kThreads + threadIdx.x;
  T acc = (bias != nullptr && o < c_out) ? bias[o] : T(0);
  int64_t row0 = 0;
  for (int64_t r = 0; r < n_runs; ++r) {
    const int64_t ky = runs[r], kx = runs[n_runs + r], rows = runs[2 * n_runs + r];
    for (int64_t k0 = 0; k0 < rows; k0 += kChunk) {
      const int64_t len = rows - k0 < kChunk ? rows - k0 : kChunk;
      __syncthreads();
      for (int64_t q = threadIdx.x; q < len; q += kThreads) {
        const int64_t k = k0 + q, tap = k / c_in, ci = k % c_in;
        staged[q] = x[b * s_b + ci * s_c + (i + ky) * s_h + (j + kx + tap) * s_w];
      }
      __syncthreads();
      if (o < c_out) {
        const T* wr = w + (row0 + k0) * ldw + o;
        for (int64_t q = 0; q < len; ++q) acc += staged[q] * wr[q * ldw];
      }
    }
    row0 += rows;
  }
  if (o < c_out) out[b * c_out + o] = acc;
}

template <typename T>
cudaError_t launch(const void* x, int64_t s_b, int64_t s_c, int64_t s_h, int64_t s_w,
                   const void* w, int64_t ldw, const void* bias, void* out, const int64_t* runs,
                   int64_t n_runs, int64_t n, int64_t c_in, int64_t c_out, int64_t i, int64_t j,
                   cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>((c_out + kThreads - 1) / kThreads));
  conv_at_kernel<T><<<grid, kThreads, 0, stream>>>(
      static_cast<const T*>(x), s_b, s_c, s_h, s_w, static_cast<const T*>(w), ldw,
      static_cast<const T*>(bias), static_cast<T*>(out), runs, n_runs, c_in, c_out, i, j);
  return cudaGetLastError();
}

}  // namespace

cudaError_t pixelcnn_sampling_conv_at_launch(DType dtype, const void* x, int64_t s_b,
                                             int64_t s_c, int64_t s_h, int64_t s_w,
                                             const void* w, int64_t ldw, const void* bias,
                                             void* out, const int64_t* runs, int64_t n_runs,
                                             int64_t n, int64_t c_in, int64_t c_out, int64_t i,
                                             int64_t j, cudaStream_t stream) {
  if (n == 0 || c_out == 0) return cudaSuccess;
  if (dtype == DType::kFloat64)
    return launch<double>(x, s_b, s_c, s_h, s_w, w, ldw, bias, out, runs, n_runs, n, c_in, c_out,
                          i, j, stream);
  if (dtype == DType::kFloat32)
    return launch<float>(x, s_b, s_c, s_h, s_w, w, ldw, bias, out, runs, n_runs, n, c_in, c_out,
                         i, j, stream);
  return cudaErrorInvalidValue;
}

}  // namespace genmodels
