// CUDA kernels of gradient_penalty. Torch-free: compiled by nvcc on any machine.
//
// Split reduction: each row (sample) is cut into n_chunks chunks so that the grid has
// enough blocks to fill the GPU even for small batches; a block of kThreads threads sums
// the squares of one chunk in the accumulation type with 64-bit offsets. With one chunk
// per row the block finishes the row itself; otherwise chunk partials go to a workspace and
// a second kernel sums them in a fixed order (deterministic, no atomics). The backward
// kernel uses the same (row, chunk) grid and scales grads by one coefficient per row.
#include <algorithm>

#include "common/cuda_utils.cuh"
#include "gradient_penalty/gradient_penalty_cuda.h"
#include "gradient_penalty/gradient_penalty_math.h"

namespace genmodels {
namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;
constexpr int64_t kMinChunkCols = kThreads * kUnroll * 2;  // 2048 elements
constexpr int64_t kTargetBlocks = 2048;

struct Tiling {
  int64_t chunk_cols;
  int64_t n_chunks;
};

Tiling make_tiling(int64_t rows, int64_t cols) {
  const int64_t c = std::max<int64_t>(cols, 1);
  const int64_t max_chunks = ceil_div(c, kMinChunkCols);
  const int64_t want = ceil_div(kTargetBlocks, std::max<int64_t>(rows, 1));
  const int64_t n = std::max<int64_t>(1, std::min(max_chunks, want));
  const int64_t chunk_cols = ceil_div(c, n);
  return {chunk_cols, ceil_div(c, chunk_cols)};
}

template <typename A>
__device__ A block_sum(A v) {
  for (int width = 16; width >= 1; width /= 2) v += __shfl_down_sync(0xffffffffu, v, width);
  __shared__ A warp_sums[kThreads / 32];
  const int warp = threadIdx.x / 32;
  if (threadIdx.x % 32 == 0) warp_sums[warp] = v;
  __syncthreads();
  A total = 0;
  if (threadIdx.x == 0)
    for (int w = 0; w < kThreads / 32; ++w) total += warp_sums[w];
  return total;  // valid in thread 0
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
forward_kernel(const T* __restrict__ grads, T* __restrict__ penalty,
               typename AccType<T>::type* __restrict__ norm,
               typename AccType<T>::type* __restrict__ partial, int64_t cols, Tiling tiling,
               double target, bool one_sided) {
  using A = typename AccType<T>::type;
  const int64_t row = blockIdx.x / tiling.n_chunks;
  const int64_t chunk = blockIdx.x % tiling.n_chunks;
  const int64_t c_begin = chunk * tiling.chunk_cols;
  const int64_t c_end = min(cols, c_begin + tiling.chunk_cols);
  const T* __restrict__ x = grads + row * cols;
  A acc[kUnroll] = {};
  int64_t c = c_begin + threadIdx.x;
  for (; c + (kUnroll - 1) * kThreads < c_end; c += kUnroll * kThreads) {
    T v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) v[u] = x[c + u * kThreads];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const A a = to_acc<T, A>(v[u]);
      acc[u] += a * a;
    }
  }
  for (; c < c_end; c += kThreads) {
    const A a = to_acc<T, A>(x[c]);
    acc[0] += a * a;
  }
  A part = 0;
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) part += acc[u];
  part = block_sum(part);
  if (threadIdx.x != 0) return;
  if (tiling.n_chunks == 1) {
    const A n = sqrt(part);
    norm[row] = n;
    penalty[row] = from_acc<T, A>(gp_math::penalty<A>(n, static_cast<A>(target), one_sided));
  } else {
    partial[row * tiling.n_chunks + chunk] = part;
  }
}

template <typename T>
__global__ void finish_kernel(const typename AccType<T>::type* __restrict__ partial,
                              T* __restrict__ penalty, typename AccType<T>::type* __restrict__ norm,
                              int64_t rows, int64_t n_chunks, double target, bool one_sided) {
  using A = typename AccType<T>::type;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= rows) return;
  A total = 0;
  for (int64_t j = 0; j < n_chunks; ++j) total += partial[row * n_chunks + j];
  const A n = sqrt(total);
  norm[row] = n;
  penalty[row] = from_acc<T, A>(gp_math::penalty<A>(n, static_cast<A>(target), one_sided));
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
backward_kernel(const T* __restrict__ grad_penalty,
                const typename AccType<T>::type* __restrict__ grad_norm,
                const T* __restrict__ grads, const typename AccType<T>::type* __restrict__ norm,
                T* __restrict__ grad_grads, int64_t cols, Tiling tiling, double target,
                bool one_sided) {
  using A = typename AccType<T>::type;
  const int64_t row = blockIdx.x / tiling.n_chunks;
  const int64_t chunk = blockIdx.x % tiling.n_chunks;
  const int64_t c_begin = chunk * tiling.chunk_cols;
  const int64_t c_end = min(cols, c_begin + tiling.chunk_cols);
  const A k = gp_math::coef<A>(to_acc<T, A>(grad_penalty[row]), grad_norm[row], norm[row],
                               static_cast<A>(target), one_sided);
  const T* __restrict__ x = grads + row * cols;
  T* __restrict__ y = grad_grads + row * cols;
  int64_t c = c_begin + threadIdx.x;
  for (; c + (kUnroll - 1) * kThreads < c_end; c += kUnroll * kThreads) {
    T v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) v[u] = x[c + u * kThreads];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) y[c + u * kThreads] = from_acc<T, A>(to_acc<T, A>(v[u]) * k);
  }
  for (; c < c_end; c += kThreads) y[c] = from_acc<T, A>(to_acc<T, A>(x[c]) * k);
}

}  // namespace

int64_t gradient_penalty_forward_workspace_bytes(DType dtype, int64_t rows, int64_t cols) {
  return split_rows_workspace_bytes(dtype, rows, make_tiling(rows, cols).n_chunks);
}

cudaError_t gradient_penalty_forward_launch(DType dtype, const void* grads, void* penalty,
                                            void* norm, void* workspace, int64_t rows,
                                            int64_t cols, double target, bool one_sided,
                                            cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  const Tiling tiling = make_tiling(rows, cols);
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = typename AccType<T>::type;
    forward_kernel<T><<<rows * tiling.n_chunks, kThreads, 0, stream>>>(
        static_cast<const T*>(grads), static_cast<T*>(penalty), static_cast<A*>(norm),
        static_cast<A*>(workspace), cols, tiling, target, one_sided);
    if (tiling.n_chunks > 1) {
      finish_kernel<T><<<ceil_div(rows, kThreads), kThreads, 0, stream>>>(
          static_cast<const A*>(workspace), static_cast<T*>(penalty), static_cast<A*>(norm),
          rows, tiling.n_chunks, target, one_sided);
    }
  });
  return cudaGetLastError();
}

cudaError_t gradient_penalty_backward_launch(DType dtype, const void* grad_penalty,
                                             const void* grad_norm, const void* grads,
                                             const void* norm, void* grad_grads, int64_t rows,
                                             int64_t cols, double target, bool one_sided,
                                             cudaStream_t stream) {
  if (rows == 0 || cols == 0) return cudaSuccess;
  const Tiling tiling = make_tiling(rows, cols);
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = typename AccType<T>::type;
    backward_kernel<T><<<rows * tiling.n_chunks, kThreads, 0, stream>>>(
        static_cast<const T*>(grad_penalty), static_cast<const A*>(grad_norm),
        static_cast<const T*>(grads), static_cast<const A*>(norm), static_cast<T*>(grad_grads),
        cols, tiling, target, one_sided);
  });
  return cudaGetLastError();
}

}  // namespace genmodels
