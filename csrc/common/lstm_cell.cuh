#pragma once
// CUDA kernels of the PixelRNN recurrences' cell (row_lstm, diagonal_lstm). Torch-free.
//
// One step of a recurrence (common/lstm_layout.h) is a GEMM of the gathered source states
// (done by the torch glue) followed by these kernels over the step's N = B * n rows: one
// thread per (row, hidden channel) reads the four gate pre-activations, adds gates_x and
// bias, and runs the cell forward, or recomputes it and runs it backward. A is the
// accumulation type (float or double) in which state and gradients are kept.
#include <cuda_runtime.h>

#include <cstdint>

#include "common/cuda_dtype.h"
#include "common/cuda_utils.cuh"
#include "common/lstm_step.h"

namespace genmodels {
namespace lstm_cuda {

constexpr int kThreads = 256;

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + __expf(-x)); }
__device__ __forceinline__ double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }
__device__ __forceinline__ float tanh_(float x) { return tanhf(x); }
__device__ __forceinline__ double tanh_(double x) { return tanh(x); }

template <typename A>
struct Gates {
  A i, f, g, o;
};

template <typename A>
__device__ __forceinline__ Gates<A> load_gates(const A* pre, const A* gx, const A* bias,
                                               int64_t q, int64_t here, int64_t ch, int64_t C) {
  const int64_t G = 4 * C;
  Gates<A> r;
  r.i = pre[q * G + ch] + gx[here * G + ch];
  r.f = pre[q * G + C + ch] + gx[here * G + C + ch];
  r.g = pre[q * G + 2 * C + ch] + gx[here * G + 2 * C + ch];
  r.o = pre[q * G + 3 * C + ch] + gx[here * G + 3 * C + ch];
  if (bias != nullptr) {
    r.i += bias[ch];
    r.f += bias[C + ch];
    r.g += bias[2 * C + ch];
    r.o += bias[3 * C + ch];
  }
  return r;
}

template <typename A>
__global__ void __launch_bounds__(kThreads)
cell_forward_kernel(const A* __restrict__ pre, const A* __restrict__ gx,
                    const A* __restrict__ bias, StepRows s, A* __restrict__ h, A* c) {
  const int64_t C = s.channels;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; t < s.rows * C;
       t += stride) {
    const int64_t q = t / C, ch = t % C;
    const int64_t b = q / s.n, i = q % s.n;
    const int64_t here = b * s.positions + s.pos[s.first + i];
    const int64_t prev = s.cell_src[s.first + i];
    const Gates<A> z = load_gates(pre, gx, bias, q, here, ch, C);
    const A c_prev = prev < 0 ? A(0) : c[(b * s.positions + prev) * C + ch];
    const A cn = sigmoid(z.f) * c_prev + sigmoid(z.i) * tanh_(z.g);
    c[here * C + ch] = cn;
    h[here * C + ch] = sigmoid(z.o) * tanh_(cn);
  }
}

// Cell predecessors are distinct within a step, so no two threads update one dc entry.
template <typename A>
__global__ void __launch_bounds__(kThreads)
cell_backward_kernel(const A* __restrict__ pre, const A* __restrict__ gx,
                     const A* __restrict__ bias, StepRows s, const A* __restrict__ c,
                     const A* __restrict__ dh, A* dc, A* __restrict__ dpre) {
  const int64_t C = s.channels, G = 4 * C;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; t < s.rows * C;
       t += stride) {
    const int64_t q = t / C, ch = t % C;
    const int64_t b = q / s.n, i = q % s.n;
    const int64_t here = b * s.positions + s.pos[s.first + i];
    const int64_t prev = s.cell_src[s.first + i];
    const int64_t prev_at = (b * s.positions + prev) * C + ch;
    const Gates<A> z = load_gates(pre, gx, bias, q, here, ch, C);
    const A gi = sigmoid(z.i), gf = sigmoid(z.f), gg = tanh_(z.g), go = sigmoid(z.o);
    const A c_prev = prev < 0 ? A(0) : c[prev_at];
    const A tc = tanh_(c[here * C + ch]);
    const A dhv = dh[here * C + ch];
    const A dcell = dc[here * C + ch] + dhv * go * (A(1) - tc * tc);
    dpre[q * G + ch] = dcell * gg * gi * (A(1) - gi);
    dpre[q * G + C + ch] = dcell * c_prev * gf * (A(1) - gf);
    dpre[q * G + 2 * C + ch] = dcell * gi * (A(1) - gg * gg);
    dpre[q * G + 3 * C + ch] = dhv * tc * go * (A(1) - go);
    if (prev >= 0) dc[prev_at] += dcell * gf;
  }
}

inline int64_t cell_blocks(int64_t work) {
  const int64_t blocks = ceil_div(work, kThreads);
  return blocks < 65536 ? (blocks > 0 ? blocks : 1) : 65536;
}

// The launchers each op's .cu file exports: acc is kFloat32 or kFloat64.
inline cudaError_t launch_cell_forward(DType acc, const void* pre, const void* gx,
                                       const void* bias, StepRows s, void* h, void* c,
                                       cudaStream_t stream) {
  if (s.rows == 0) return cudaSuccess;
  const int64_t blocks = cell_blocks(s.rows * s.channels);
  if (acc == DType::kFloat64) {
    cell_forward_kernel<double><<<blocks, kThreads, 0, stream>>>(
        static_cast<const double*>(pre), static_cast<const double*>(gx),
        static_cast<const double*>(bias), s, static_cast<double*>(h), static_cast<double*>(c));
  } else {
    cell_forward_kernel<float><<<blocks, kThreads, 0, stream>>>(
        static_cast<const float*>(pre), static_cast<const float*>(gx),
        static_cast<const float*>(bias), s, static_cast<float*>(h), static_cast<float*>(c));
  }
  return cudaGetLastError();
}

inline cudaError_t launch_cell_backward(DType acc, const void* pre, const void* gx,
                                        const void* bias, StepRows s, const void* c,
                                        const void* dh, void* dc, void* dpre,
                                        cudaStream_t stream) {
  if (s.rows == 0) return cudaSuccess;
  const int64_t blocks = cell_blocks(s.rows * s.channels);
  if (acc == DType::kFloat64) {
    cell_backward_kernel<double><<<blocks, kThreads, 0, stream>>>(
        static_cast<const double*>(pre), static_cast<const double*>(gx),
        static_cast<const double*>(bias), s, static_cast<const double*>(c),
        static_cast<const double*>(dh), static_cast<double*>(dc), static_cast<double*>(dpre));
  } else {
    cell_backward_kernel<float><<<blocks, kThreads, 0, stream>>>(
        static_cast<const float*>(pre), static_cast<const float*>(gx),
        static_cast<const float*>(bias), s, static_cast<const float*>(c),
        static_cast<const float*>(dh), static_cast<float*>(dc), static_cast<float*>(dpre));
  }
  return cudaGetLastError();
}

}  // namespace lstm_cuda
}  // namespace genmodels
