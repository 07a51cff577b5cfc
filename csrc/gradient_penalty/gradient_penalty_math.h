#pragma once
// Per-sample scalar math of gradient_penalty, shared by the CPU and CUDA kernels (torch-free).
// The spec is gradient_penalty_reference in python/genmodels/ops/gradient_penalty.py.
#ifdef __CUDACC__
#define GM_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define GM_HOST_DEVICE inline
#endif

namespace genmodels {
namespace gp_math {

// n - target, clamped at 0 when one-sided (then d penalty / d n = 2 * excess).
template <typename A>
GM_HOST_DEVICE A excess(A n, A target, bool one_sided) {
  const A d = n - target;
  return (one_sided && d < A(0)) ? A(0) : d;
}

template <typename A>
GM_HOST_DEVICE A penalty(A n, A target, bool one_sided) {
  const A d = excess(n, target, one_sided);
  return d * d;
}

// d loss / d grads[b, i] = coef * grads[b, i], from d loss / d penalty[b] (gp) and
// d loss / d norm[b] (gn). The norm's gradient at n = 0 is defined as 0; a NaN norm stays NaN.
template <typename A>
GM_HOST_DEVICE A coef(A gp, A gn, A n, A target, bool one_sided) {
  if (n == A(0)) return A(0);
  return (gp * A(2) * excess(n, target, one_sided) + gn) / n;
}

}  // namespace gp_math
}  // namespace genmodels
