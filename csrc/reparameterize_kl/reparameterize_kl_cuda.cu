// CUDA kernels of reparameterize_kl. Torch-free: compiled by nvcc on any machine.
//
// Rows of mu/logvar are handed to groups of `tpr` threads (a power of two up to a warp,
// or the whole block), so short latent rows (D = 32) and long rows both keep threads busy.
// Rows longer than kChunkCols are split over several blocks; their KL partials go to a
// workspace and a second kernel sums them in a fixed order (deterministic, no atomics).
#include <algorithm>

#include "common/cuda_utils.cuh"
#include "common/philox.h"
#include "reparameterize_kl/reparameterize_kl_cuda.h"

namespace genmodels {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kChunkCols = 8192;

struct Tiling {
  int tpr;             // threads per row
  int64_t chunk_cols;  // columns one row group covers
  int64_t n_chunks;
  int64_t blocks;
};

Tiling make_tiling(int64_t rows, int64_t cols) {
  int tpr = 1;
  while (tpr < 32 && tpr < cols) tpr *= 2;
  if (cols > 32) tpr = kThreads;
  const int64_t chunk_cols = std::min<int64_t>(std::max<int64_t>(cols, 1), kChunkCols);
  const int64_t n_chunks = ceil_div(std::max<int64_t>(cols, 1), chunk_cols);
  const int64_t rows_per_block = kThreads / tpr;
  return {tpr, chunk_cols, n_chunks, ceil_div(rows, rows_per_block) * n_chunks};
}

template <typename A>
__device__ A row_group_sum(A v, int tpr) {
  for (int width = 16; width >= 1; width /= 2)
    if (width < tpr) v += __shfl_down_sync(0xffffffffu, v, width, tpr < 32 ? tpr : 32);
  if (tpr <= 32) return v;
  __shared__ A warp_sums[kThreads / 32];
  const int warp = threadIdx.x / 32;
  if (threadIdx.x % 32 == 0) warp_sums[warp] = v;
  __syncthreads();
  A total = 0;
  if (threadIdx.x == 0)
    for (int w = 0; w < kThreads / 32; ++w) total += warp_sums[w];
  return total;
}

template <typename A>
__device__ __forceinline__ A noise_at(const PhiloxKey& key, uint64_t idx) {
  return static_cast<A>(philox_normal(key, idx));
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
forward_kernel(const T* __restrict__ mu, const T* __restrict__ logvar, const T* __restrict__ eps,
               T* __restrict__ z, T* __restrict__ kl,
               typename AccType<T>::type* __restrict__ partial, int64_t rows, int64_t cols,
               int64_t samples, Tiling tiling, PhiloxKey key) {
  using A = typename AccType<T>::type;
  const int lane = threadIdx.x % tiling.tpr;
  const int64_t rows_per_block = kThreads / tiling.tpr;
  const int64_t chunk = blockIdx.x % tiling.n_chunks;
  const int64_t row = (blockIdx.x / tiling.n_chunks) * rows_per_block + threadIdx.x / tiling.tpr;
  const int64_t c_begin = chunk * tiling.chunk_cols;
  const int64_t c_end = min(cols, c_begin + tiling.chunk_cols);
  const int64_t per_sample = rows * cols;
  A part = 0;
  if (row < rows) {
    for (int64_t c = c_begin + lane; c < c_end; c += tiling.tpr) {
      const int64_t i = row * cols + c;
      const A m = to_acc<T, A>(mu[i]);
      const A v = to_acc<T, A>(logvar[i]);
      const A sigma = exp(A(0.5) * v);
      part += exp(v) + m * m - A(1) - v;
      for (int64_t s = 0; s < samples; ++s) {
        const int64_t idx = s * per_sample + i;
        const A e = eps != nullptr ? to_acc<T, A>(eps[idx]) : noise_at<A>(key, idx);
        z[idx] = from_acc<T, A>(m + e * sigma);
      }
    }
  }
  part = row_group_sum(part, tiling.tpr);
  if (lane == 0 && row < rows) {
    if (tiling.n_chunks == 1) {
      kl[row] = from_acc<T, A>(A(0.5) * part);
    } else {
      partial[row * tiling.n_chunks + chunk] = part;
    }
  }
}

template <typename T>
__global__ void sum_partials_kernel(const typename AccType<T>::type* __restrict__ partial,
                                    T* __restrict__ kl, int64_t rows, int64_t n_chunks) {
  using A = typename AccType<T>::type;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= rows) return;
  A total = 0;
  for (int64_t j = 0; j < n_chunks; ++j) total += partial[row * n_chunks + j];
  kl[row] = from_acc<T, A>(A(0.5) * total);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
backward_kernel(const T* __restrict__ grad_z, const T* __restrict__ grad_kl,
                const T* __restrict__ mu, const T* __restrict__ logvar,
                const T* __restrict__ eps, T* __restrict__ grad_mu, T* __restrict__ grad_logvar,
                int64_t rows, int64_t cols, int64_t samples, Tiling tiling, PhiloxKey key) {
  using A = typename AccType<T>::type;
  const int lane = threadIdx.x % tiling.tpr;
  const int64_t rows_per_block = kThreads / tiling.tpr;
  const int64_t chunk = blockIdx.x % tiling.n_chunks;
  const int64_t row = (blockIdx.x / tiling.n_chunks) * rows_per_block + threadIdx.x / tiling.tpr;
  if (row >= rows) return;
  const int64_t c_begin = chunk * tiling.chunk_cols;
  const int64_t c_end = min(cols, c_begin + tiling.chunk_cols);
  const int64_t per_sample = rows * cols;
  const A gk = to_acc<T, A>(grad_kl[row]);
  for (int64_t c = c_begin + lane; c < c_end; c += tiling.tpr) {
    const int64_t i = row * cols + c;
    const A m = to_acc<T, A>(mu[i]);
    const A v = to_acc<T, A>(logvar[i]);
    A g_sum = 0, g_noise = 0;
    for (int64_t s = 0; s < samples; ++s) {
      const int64_t idx = s * per_sample + i;
      const A e = eps != nullptr ? to_acc<T, A>(eps[idx]) : noise_at<A>(key, idx);
      const A g = to_acc<T, A>(grad_z[idx]);
      g_sum += g;
      g_noise += g * e;
    }
    grad_mu[i] = from_acc<T, A>(g_sum + gk * m);
    grad_logvar[i] = from_acc<T, A>(A(0.5) * (g_noise * exp(A(0.5) * v) + gk * expm1(v)));
  }
}

}  // namespace

int64_t reparameterize_kl_forward_workspace_bytes(DType dtype, int64_t rows, int64_t cols) {
  return split_rows_workspace_bytes(dtype, rows, make_tiling(rows, cols).n_chunks);
}

cudaError_t reparameterize_kl_forward_launch(DType dtype, const void* mu, const void* logvar,
                                             const void* eps, void* z, void* kl,
                                             void* workspace, int64_t rows, int64_t cols,
                                             int64_t samples, uint64_t seed, uint64_t offset,
                                             cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  const Tiling tiling = make_tiling(rows, cols);
  const PhiloxKey key = make_philox_key(seed, offset);
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = typename AccType<T>::type;
    forward_kernel<T><<<tiling.blocks, kThreads, 0, stream>>>(
        static_cast<const T*>(mu), static_cast<const T*>(logvar), static_cast<const T*>(eps),
        static_cast<T*>(z), static_cast<T*>(kl), static_cast<A*>(workspace), rows, cols,
        samples, tiling, key);
    if (tiling.n_chunks > 1) {
      sum_partials_kernel<T><<<ceil_div(rows, kThreads), kThreads, 0, stream>>>(
          static_cast<const A*>(workspace), static_cast<T*>(kl), rows, tiling.n_chunks);
    }
  });
  return cudaGetLastError();
}

cudaError_t reparameterize_kl_backward_launch(DType dtype, const void* grad_z,
                                              const void* grad_kl, const void* mu,
                                              const void* logvar, const void* eps,
                                              void* grad_mu, void* grad_logvar, int64_t rows,
                                              int64_t cols, int64_t samples, uint64_t seed,
                                              uint64_t offset, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return cudaSuccess;
  const Tiling tiling = make_tiling(rows, cols);
  const PhiloxKey key = make_philox_key(seed, offset);
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    backward_kernel<T><<<tiling.blocks, kThreads, 0, stream>>>(
        static_cast<const T*>(grad_z), static_cast<const T*>(grad_kl),
        static_cast<const T*>(mu), static_cast<const T*>(logvar), static_cast<const T*>(eps),
        static_cast<T*>(grad_mu), static_cast<T*>(grad_logvar), rows, cols, samples, tiling,
        key);
  });
  return cudaGetLastError();
}

}  // namespace genmodels
