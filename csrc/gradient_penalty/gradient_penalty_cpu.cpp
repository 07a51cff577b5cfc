// CPU kernels of gradient_penalty: the forward pass reads grads once (sum of squares per
// sample), the backward pass reads grads once and writes grad_grads once.
//
// (row, chunk) tasks as in common/cpu_chunks.h. Reductions keep 64 (float) or 32 (double)
// independent accumulators: four AVX-512 registers, so the adds do not wait on each other's
// latency and a core reads at memory speed. Half inputs are converted a tile at a time.
// The *_reduced entry points fold the batch reduction into the same passes (the eager
// autograd node in gradient_penalty_autograd_cpu.cpp calls them).
#include <ATen/Dispatch.h>

#include <algorithm>
#include <cmath>
#include <limits>
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

constexpr int kAccF32 = 64;
constexpr int kAccF64 = 32;

GM_CPU_CLONES float sumsq_f32(const float* x, int64_t n) {
  float acc[kAccF32] = {0};
  int64_t i = 0;
  for (; i + kAccF32 <= n; i += kAccF32)
    for (int j = 0; j < kAccF32; ++j) acc[j] += x[i + j] * x[i + j];
  for (int j = 0; i < n; ++i, ++j) acc[j] += x[i] * x[i];
  float total = 0.0f;
  for (int j = 0; j < kAccF32; ++j) total += acc[j];
  return total;
}

GM_CPU_CLONES double sumsq_f64(const double* x, int64_t n) {
  double acc[kAccF64] = {0};
  int64_t i = 0;
  for (; i + kAccF64 <= n; i += kAccF64)
    for (int j = 0; j < kAccF64; ++j) acc[j] += x[i + j] * x[i + j];
  for (int j = 0; i < n; ++i, ++j) acc[j] += x[i] * x[i];
  double total = 0.0;
  for (int j = 0; j < kAccF64; ++j) total += acc[j];
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

// Norms into norm[r] and penalties (in grads' dtype) into penalty[r]; returns the sum of
// the penalties as rounded to grads' dtype, in double, in row order.
template <typename scalar_t>
double forward_kernel(const scalar_t* g, scalar_t* penalty, typename Acc<scalar_t>::type* norm,
                      const Layout& L, double target, bool one_sided) {
  using A = typename Acc<scalar_t>::type;
  std::vector<A> partial(L.rows * L.chunks_per_row, A(0));
  for_each_row_chunk(L, [&](int64_t row, int64_t c0, int64_t c1, int64_t task) {
    partial[task] = Acc<scalar_t>::sumsq(g + row * L.cols + c0, c1 - c0);
  });
  const std::vector<A> sums = sum_row_partials(partial, L);
  double total = 0.0;
  for (int64_t r = 0; r < L.rows; ++r) {
    const A n = std::sqrt(sums[r]);
    norm[r] = n;
    penalty[r] = static_cast<scalar_t>(gp_math::penalty<A>(n, static_cast<A>(target), one_sided));
    total += static_cast<double>(penalty[r]);
  }
  return total;
}

template <typename A, typename scalar_t>
void backward_kernel(const scalar_t* g, const std::vector<A>& coefs, scalar_t* out,
                     const Layout& L) {
  for_each_row_chunk(L, [&](int64_t row, int64_t c0, int64_t c1, int64_t) {
    const int64_t base = row * L.cols + c0;
    Acc<scalar_t>::scale(g + base, c1 - c0, coefs[row], out + base);
  });
}

// One-dimensional view of a [rows] (or one-element) gradient, or the undefined tensor.
at::Tensor flat(const at::Tensor& t) { return !t.defined() || t.dim() == 1 ? t : t.reshape({-1}); }

// d loss / d penalty[r] from d loss / d output: grad_out[r * stride] for "none", grad_out[0]
// times 1 ("sum") or 1 / rows ("mean") otherwise; an undefined grad_out (or grad_norm) is 0.
template <typename scalar_t>
std::vector<typename Acc<scalar_t>::type> backward_coefs(const at::Tensor& grad_out,
                                                         const at::Tensor& grad_norm,
                                                         const at::Tensor& norm_t, double target,
                                                         bool one_sided, GpReduction reduction) {
  using A = typename Acc<scalar_t>::type;
  const int64_t rows = norm_t.numel();
  const A* norm = norm_t.const_data_ptr<A>();
  const scalar_t* gp = grad_out.defined() ? grad_out.const_data_ptr<scalar_t>() : nullptr;
  const int64_t gp_stride = reduction == GpReduction::None && gp ? grad_out.stride(0) : 0;
  const A gp_scale = reduction == GpReduction::Mean ? static_cast<A>(1.0 / rows) : A(1);
  const A* gn = grad_norm.defined() ? grad_norm.const_data_ptr<A>() : nullptr;
  const int64_t gn_stride = gn ? grad_norm.stride(0) : 0;
  std::vector<A> coefs(rows);
  for (int64_t r = 0; r < rows; ++r) {
    A gp_r = gp ? static_cast<A>(gp[r * gp_stride]) : A(0);
    if (reduction != GpReduction::None) gp_r = gp_r * gp_scale;
    const A gn_r = gn ? gn[r * gn_stride] : A(0);
    coefs[r] = gp_math::coef<A>(gp_r, gn_r, norm[r], static_cast<A>(target), one_sided);
  }
  return coefs;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> gradient_penalty_forward_reduced_cpu(const at::Tensor& grads_in,
                                                                        double target,
                                                                        bool one_sided,
                                                                        GpReduction reduction) {
  check_gradient_penalty_inputs(grads_in);
  check_device_type(grads_in, at::kCPU, "grads");
  const at::Tensor grads = gradient_penalty_dense_rows(grads_in);
  const int64_t rows = grads.size(0);
  const bool per_sample = reduction == GpReduction::None;
  at::Tensor out = per_sample ? at::empty({rows}, grads.options()) : at::empty({}, grads.options());
  at::Tensor norm =
      at::empty({rows}, grads.options().dtype(gradient_penalty_acc_type(grads.scalar_type())));
  const Layout layout = make_layout(rows, grads.numel());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grads.scalar_type(),
                                  "gradient_penalty_forward_cpu", [&] {
    using A = typename Acc<scalar_t>::type;
    std::vector<scalar_t> scratch(per_sample ? 0 : rows);
    scalar_t* penalty = per_sample ? out.mutable_data_ptr<scalar_t>() : scratch.data();
    const double total =
        rows == 0 ? 0.0
                  : forward_kernel<scalar_t>(grads.const_data_ptr<scalar_t>(), penalty,
                                             norm.mutable_data_ptr<A>(), layout, target, one_sided);
    if (reduction == GpReduction::Sum) {
      out.mutable_data_ptr<scalar_t>()[0] = static_cast<scalar_t>(total);
    } else if (reduction == GpReduction::Mean) {  // the mean of no samples is NaN, as in torch
      out.mutable_data_ptr<scalar_t>()[0] = static_cast<scalar_t>(
          rows ? total / static_cast<double>(rows) : std::numeric_limits<double>::quiet_NaN());
    }
  });
  return {out, norm};
}

std::tuple<at::Tensor, at::Tensor> gradient_penalty_forward_cpu(const at::Tensor& grads,
                                                                double target, bool one_sided) {
  return gradient_penalty_forward_reduced_cpu(grads, target, one_sided, GpReduction::None);
}

at::Tensor gradient_penalty_backward_reduced_cpu(const at::Tensor& grad_out,
                                                 const at::Tensor& grad_norm,
                                                 const at::Tensor& grads_in, const at::Tensor& norm_in,
                                                 double target, bool one_sided,
                                                 GpReduction reduction) {
  check_gradient_penalty_inputs(grads_in);
  check_gradient_penalty_grads(grad_out, grad_norm, grads_in, norm_in,
                               reduction == GpReduction::None ? grads_in.size(0) : 1);
  check_device_type(grads_in, at::kCPU, "grads");
  const at::Tensor grads = gradient_penalty_dense_rows(grads_in);
  const at::Tensor norm = norm_in.contiguous();
  at::Tensor out = empty_output_like(grads);
  if (grads.numel() == 0) return out;
  const Layout layout = make_layout(grads.size(0), grads.numel());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grads.scalar_type(),
                                  "gradient_penalty_backward_cpu", [&] {
    const auto coefs = backward_coefs<scalar_t>(flat(grad_out), flat(grad_norm), norm, target,
                                                one_sided, reduction);
    backward_kernel(grads.const_data_ptr<scalar_t>(), coefs, out.mutable_data_ptr<scalar_t>(),
                    layout);
  });
  return out;
}

at::Tensor gradient_penalty_backward_cpu(const at::Tensor& grad_penalty,
                                         const at::Tensor& grad_norm, const at::Tensor& grads,
                                         const at::Tensor& norm, double target, bool one_sided) {
  TORCH_CHECK(grad_penalty.defined() && grad_norm.defined(),
              "grad_penalty and grad_norm must be tensors");
  return gradient_penalty_backward_reduced_cpu(grad_penalty, grad_norm, grads, norm, target,
                                               one_sided, GpReduction::None);
}

}  // namespace genmodels
