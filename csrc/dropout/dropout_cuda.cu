// CUDA kernel of dropout. Torch-free: compiled by nvcc on any machine.
//
// Each thread owns counter groups (four consecutive elements, one Philox call) in a
// grid-stride loop; when both pointers are aligned to a group, its four elements move as
// one vector load and store.
#include <algorithm>

#include "common/cuda_utils.cuh"
#include "common/philox.h"
#include "dropout/dropout_cuda.h"

namespace genmodels {
namespace {

constexpr int kThreads = 256;
// Enough resident blocks for any current GPU; larger inputs loop.
constexpr int64_t kMaxBlocks = 65536;

template <typename T>
struct alignas(4 * sizeof(T)) Group {
  T v[4];
};

template <typename T, typename A>
__device__ __forceinline__ T masked(T x, uint32_t word, uint32_t threshold, A scale) {
  // A product, not a select: NaN and inf inputs give what x * keep / (1 - p) gives.
  return from_acc<T, A>(to_acc<T, A>(x) * (dropout_drops(word, threshold) ? A(0) : scale));
}

template <typename T, bool kAligned>
__global__ void __launch_bounds__(kThreads)
dropout_kernel(const T* __restrict__ x, T* __restrict__ out, int64_t n, uint32_t threshold,
               typename AccType<T>::type scale, PhiloxKey key) {
  using A = typename AccType<T>::type;
  const int64_t groups = (n + 3) / 4;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t g = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; g < groups;
       g += stride) {
    const Philox4 r = philox_group(key, static_cast<uint64_t>(g));
    const uint32_t words[4] = {r.x0, r.x1, r.x2, r.x3};
    const int64_t i0 = 4 * g;
    if (kAligned && i0 + 4 <= n) {
      Group<T> v = reinterpret_cast<const Group<T>*>(x)[g];
#pragma unroll
      for (int k = 0; k < 4; ++k) v.v[k] = masked(v.v[k], words[k], threshold, scale);
      reinterpret_cast<Group<T>*>(out)[g] = v;
    } else {
#pragma unroll
      for (int k = 0; k < 4; ++k)
        if (i0 + k < n) out[i0 + k] = masked(x[i0 + k], words[k], threshold, scale);
    }
  }
}

bool aligned_to(const void* p, size_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

}  // namespace

cudaError_t dropout_launch(DType dtype, const void* x, void* out, int64_t n, uint32_t threshold,
                           double scale, uint64_t seed, uint64_t offset, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const PhiloxKey key = make_philox_key(seed, offset);
  const int64_t blocks = std::min(ceil_div(ceil_div(n, 4), kThreads), kMaxBlocks);
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = typename AccType<T>::type;
    const T* xt = static_cast<const T*>(x);
    T* ot = static_cast<T*>(out);
    const A s = static_cast<A>(scale);
    if (aligned_to(x, sizeof(Group<T>)) && aligned_to(out, sizeof(Group<T>))) {
      dropout_kernel<T, true><<<blocks, kThreads, 0, stream>>>(xt, ot, n, threshold, s, key);
    } else {
      dropout_kernel<T, false><<<blocks, kThreads, 0, stream>>>(xt, ot, n, threshold, s, key);
    }
  });
  return cudaGetLastError();
}

}  // namespace genmodels
