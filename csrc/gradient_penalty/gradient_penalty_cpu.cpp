// CPU kernels of gradient_penalty: the forward pass reads grads once (sum of squares per
// sample), the backward pass reads grads once and writes grad_grads once.
//
// (row, chunk) tasks as in common/cpu_chunks.h. Reductions keep 16 independent
// accumulators, which GCC vectorizes. Half inputs are converted a tile at a time.
#include <ATen/Dispatch.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/cpu_alloc.h"
#include "common/cpu_chunks.h"
#include "gradient_penalty/gradient_penalty.h"
#include "gradient_penalty/gradient_penalty_checks.h"
#include "gradient_penalty/gradient_penalty_math.h"


namespace genmodels {
namespace {

constexpr int64_t kTile = 512;
constexpr int64_t kChunk = 32768;

GM_CPU_CLONES float sumsq_f32(const float* x, int64_t n) {
  float acc[16] = {0};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) acc[j] += x[i + j] * x[i + j];
  for (; i < n; ++i) acc[0] += x[i] * x[i];
  float total = 0.0f;
  for (int j = 0; j < 16; ++j) total += acc[j];
  return total;
}

GM_CPU_CLONES double sumsq_f64(const double* x, int64_t n) {
  double acc[8] = {0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += x[i + j] * x[i + j];
  for (; i < n; ++i) acc[0] += x[i] * x[i];
  double total = 0.0;
  for (int j = 0; j < 8; ++j) total += acc[j];
  return total;
}

GM_CPU_CLONES void scale_f32(const float* x, int64_t n, float c, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * c;
}

GM_CPU_CLONES void scale_f64(const double* x, int64_t n, double c, double* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * c;
}

// Sum of squares of x[0, n) in float (float32 and half types) or double.
template <typename scalar_t>
float sumsq(const scalar_t* x, int64_t n) {
  float tile[kTile];
  float total = 0.0f;
  for (int64_t t0 = 0; t0 < n; t0 += kTile) {
    const int64_t m = std::min(kTile, n - t0);
    for (int64_t i = 0; i < m; ++i) tile[i] = static_cast<float>(x[t0 + i]);
    total += sumsq_f32(tile, m);
  }
  return total;
}
template <>
float sumsq<float>(const float* x, int64_t n) {
  return sumsq_f32(x, n);
}

template <typename scalar_t>
void scale(const scalar_t* x, int64_t n, float c, scalar_t* out) {
  float tile[kTile];
  for (int64_t t0 = 0; t0 < n; t0 += kTile) {
    const int64_t m = std::min(kTile, n - t0);
    for (int64_t i = 0; i < m; ++i) tile[i] = static_cast<float>(x[t0 + i]);
    scale_f32(tile, m, c, tile);
    for (int64_t i = 0; i < m; ++i) out[t0 + i] = static_cast<scalar_t>(tile[i]);
  }
}
template <>
void scale<float>(const float* x, int64_t n, float c, float* out) {
  scale_f32(x, n, c, out);
}

template <typename scalar_t>
struct Acc {
  using type = float;
  static float sumsq(const scalar_t* x, int64_t n) { return genmodels::sumsq(x, n); }
  static void scale(const scalar_t* x, int64_t n, float c, scalar_t* out) {
    genmodels::scale(x, n, c, out);
  }
};
template <>
struct Acc<double> {
  using type = double;
  static double sumsq(const double* x, int64_t n) { return sumsq_f64(x, n); }
  static void scale(const double* x, int64_t n, double c, double* out) {
    scale_f64(x, n, c, out);
  }
};

using Layout = RowChunks;

Layout make_layout(int64_t rows, int64_t numel) { return make_row_chunks(rows, numel, kChunk); }

template <typename scalar_t>
void forward_kernel(const scalar_t* g, scalar_t* penalty, typename Acc<scalar_t>::type* norm,
                    const Layout& L, double target, bool one_sided) {
  using A = typename Acc<scalar_t>::type;
  std::vector<A> partial(L.rows * L.chunks_per_row, A(0));
  for_each_row_chunk(L, [&](int64_t row, int64_t c0, int64_t c1, int64_t task) {
    partial[task] = Acc<scalar_t>::sumsq(g + row * L.cols + c0, c1 - c0);
  });
  const std::vector<A> sums = sum_row_partials(partial, L);
  for (int64_t r = 0; r < L.rows; ++r) {
    const A n = std::sqrt(sums[r]);
    norm[r] = n;
    penalty[r] = static_cast<scalar_t>(gp_math::penalty<A>(n, static_cast<A>(target), one_sided));
  }
}

template <typename scalar_t>
void backward_kernel(const scalar_t* gp, const typename Acc<scalar_t>::type* gn,
                     const scalar_t* g, const typename Acc<scalar_t>::type* norm, scalar_t* out,
                     const Layout& L, double target, bool one_sided) {
  using A = typename Acc<scalar_t>::type;
  std::vector<A> coefs(L.rows);
  for (int64_t r = 0; r < L.rows; ++r)
    coefs[r] = gp_math::coef<A>(static_cast<A>(gp[r]), gn[r], norm[r], static_cast<A>(target),
                                one_sided);
  for_each_row_chunk(L, [&](int64_t row, int64_t c0, int64_t c1, int64_t) {
    const int64_t base = row * L.cols + c0;
    Acc<scalar_t>::scale(g + base, c1 - c0, coefs[row], out + base);
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> gradient_penalty_forward_cpu(const at::Tensor& grads_in,
                                                                double target, bool one_sided) {
  check_gradient_penalty_inputs(grads_in);
  check_device_type(grads_in, at::kCPU, "grads");
  const at::Tensor grads = gradient_penalty_dense_rows(grads_in);
  const int64_t rows = grads.size(0);
  at::Tensor penalty = at::empty({rows}, grads.options());
  at::Tensor norm =
      at::empty({rows}, grads.options().dtype(gradient_penalty_acc_type(grads.scalar_type())));
  if (rows == 0) return {penalty, norm};
  const Layout layout = make_layout(rows, grads.numel());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grads.scalar_type(),
                                  "gradient_penalty_forward_cpu", [&] {
    using A = typename Acc<scalar_t>::type;
    forward_kernel<scalar_t>(grads.const_data_ptr<scalar_t>(), penalty.mutable_data_ptr<scalar_t>(),
                             norm.mutable_data_ptr<A>(), layout, target, one_sided);
  });
  return {penalty, norm};
}

at::Tensor gradient_penalty_backward_cpu(const at::Tensor& grad_penalty_in,
                                         const at::Tensor& grad_norm_in, const at::Tensor& grads_in,
                                         const at::Tensor& norm_in, double target, bool one_sided) {
  check_gradient_penalty_inputs(grads_in);
  check_gradient_penalty_grads(grad_penalty_in, grad_norm_in, grads_in, norm_in);
  check_device_type(grads_in, at::kCPU, "grads");
  const at::Tensor grads = gradient_penalty_dense_rows(grads_in);
  const at::Tensor grad_penalty = grad_penalty_in.contiguous();
  const at::Tensor grad_norm = grad_norm_in.contiguous();
  const at::Tensor norm = norm_in.contiguous();
  at::Tensor out = empty_output_like(grads);
  if (grads.numel() == 0) return out;
  const Layout layout = make_layout(grads.size(0), grads.numel());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grads.scalar_type(),
                                  "gradient_penalty_backward_cpu", [&] {
    using A = typename Acc<scalar_t>::type;
    backward_kernel<scalar_t>(grad_penalty.const_data_ptr<scalar_t>(),
                              grad_norm.const_data_ptr<A>(), grads.const_data_ptr<scalar_t>(),
                              norm.const_data_ptr<A>(), out.mutable_data_ptr<scalar_t>(), layout,
                              target, one_sided);
  });
  return out;
}

}  // namespace genmodels
