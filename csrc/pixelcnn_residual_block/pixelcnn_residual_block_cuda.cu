// CUDA kernel of the residual block's fused ReLU + dropout. Torch-free: compiled by nvcc on any machine. Each thread owns counter
// groups of four consecutive elements (one Philox call) in a grid-stride loop, as the
// dropout kernel does, so the masks are the dropout op's.
#include <algorithm>

#include "common/cuda_utils.cuh"
#include "common/philox.h"
#include "pixelcnn_residual_block/pixelcnn_residual_block_cuda.h"

namespace genmodels {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65536;

template <typename T>
__global__ void __launch_bounds__(kThreads)
relu_dropout_kernel(const T* t, T* r, T* d, int64_t n, bool with_dropout,
                    uint32_t threshold, typename AccType<T>::type scale, PhiloxKey key) {
  using A = typename AccType<T>::type;
  const int64_t groups = (n + 3) / 4;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t g = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; g < groups;
       g += stride) {
    uint32_t words[4] = {0, 0, 0, 0};
    if (with_dropout) {
      const Philox4 w = philox_group(key, static_cast<uint64_t>(g));
      words[0] = w.x0;
      words[1] = w.x1;
      words[2] = w.x2;
      words[3] = w.x3;
    }
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int64_t i = 4 * g + k;
      if (i >= n) break;
      A v = to_acc<T, A>(t[i]);
      v = v > A(0) ? v : (v != v ? v : A(0));  // NaN stays NaN, as in torch.relu
      r[i] = from_acc<T, A>(v);
      // A product, not a select: NaN and inf give what x * keep / (1 - p) gives.
      if (with_dropout) v = v * (dropout_drops(words[k], threshold) ? A(0) : scale);
      d[i] = from_acc<T, A>(v);
    }
  }
}

}  // namespace

cudaError_t relu_dropout_launch(DType dtype, const void* t, void* r, void* d,
                                int64_t n, bool with_dropout, uint32_t threshold, double scale,
                                uint64_t seed, uint64_t offset, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const PhiloxKey key = make_philox_key(seed, offset);
  const int64_t blocks = std::min(ceil_div(ceil_div(n, 4), kThreads), kMaxBlocks);
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = typename AccType<T>::type;
    const T* tt = static_cast<const T*>(t);
    T* rt = static_cast<T*>(r);
    T* dt = static_cast<T*>(d);
    const A s = static_cast<A>(scale);
    relu_dropout_kernel<T>
        <<<blocks, kThreads, 0, stream>>>(tt, rt, dt, n, with_dropout, threshold, s, key);
  });
  return cudaGetLastError();
}

}  // namespace genmodels
