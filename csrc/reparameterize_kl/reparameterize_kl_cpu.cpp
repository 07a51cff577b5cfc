// CPU kernels of reparameterize_kl: one pass over mu and logvar that draws the noise in
// the loop, writes z for every sample and accumulates the per-sample KL.
//
// (row, chunk) tasks as in common/cpu_chunks.h; inner loops run over tiles of kTile
// elements held in float arrays, which GCC vectorizes.
#include <ATen/Dispatch.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/cpu_alloc.h"
#include "common/cpu_chunks.h"
#include "common/cpu_math.h"
#include "common/cpu_tiles.h"
#include "common/philox.h"
#include "reparameterize_kl/reparameterize_kl.h"
#include "reparameterize_kl/reparameterize_kl_checks.h"

namespace genmodels {
namespace {

constexpr int64_t kTile = 256;
constexpr int64_t kChunk = 16384;

// Normals of the elements [first, first + count) of the stream; count <= kTile. Three
// loops over structure-of-arrays buffers (Philox words, Box-Muller, interleave) so that
// the first two vectorize.
GM_CPU_CLONES void philox_normals(PhiloxKey key, uint64_t first, int64_t count, float* out) {
  constexpr int64_t kGroups = kTile / 4 + 2;
  const uint64_t g0 = first >> 2;
  const int64_t lead = static_cast<int64_t>(first & 3);
  const int64_t groups = (lead + count + 3) >> 2;
  uint32_t w0[kGroups], w1[kGroups], w2[kGroups], w3[kGroups];
  for (int64_t j = 0; j < groups; ++j) {
    const Philox4 r = philox_group(key, g0 + static_cast<uint64_t>(j));
    w0[j] = r.x0;
    w1[j] = r.x1;
    w2[j] = r.x2;
    w3[j] = r.x3;
  }
  float n0[kGroups], n1[kGroups], n2[kGroups], n3[kGroups];
  for (int64_t j = 0; j < groups; ++j) {
    const float r0 = std::sqrt(-2.0f * cpu_math::log_positive(uniform_open(w0[j])));
    const float r1 = std::sqrt(-2.0f * cpu_math::log_positive(uniform_open(w2[j])));
    float s0, c0, s1, c1;
    cpu_math::sincos_turns(uniform_turns(w1[j]), s0, c0);
    cpu_math::sincos_turns(uniform_turns(w3[j]), s1, c1);
    n0[j] = r0 * c0;
    n1[j] = r0 * s0;
    n2[j] = r1 * c1;
    n3[j] = r1 * s1;
  }
  float buf[4 * kGroups];
  for (int64_t j = 0; j < groups; ++j) {
    buf[4 * j + 0] = n0[j];
    buf[4 * j + 1] = n1[j];
    buf[4 * j + 2] = n2[j];
    buf[4 * j + 3] = n3[j];
  }
  std::copy(buf + lead, buf + lead + count, out);
}

// sigma = exp(logvar / 2) for a tile; returns the tile's sum of exp(logvar) + mu^2 - 1 - logvar.
GM_CPU_CLONES float sigma_and_kl_tile(const float* mu, const float* lv, int64_t count,
                                      float* sigma) {
  float acc[16] = {0};
  int64_t i = 0;
  for (; i + 16 <= count; i += 16) {
    for (int j = 0; j < 16; ++j) {
      const float s = cpu_math::exp_any(0.5f * lv[i + j]);
      sigma[i + j] = s;
      acc[j] += s * s + mu[i + j] * mu[i + j] - 1.0f - lv[i + j];
    }
  }
  for (; i < count; ++i) {
    const float s = cpu_math::exp_any(0.5f * lv[i]);
    sigma[i] = s;
    acc[0] += s * s + mu[i] * mu[i] - 1.0f - lv[i];
  }
  float total = 0.0f;
  for (int j = 0; j < 16; ++j) total += acc[j];
  return total;
}

GM_CPU_CLONES void sigma_tile(const float* lv, int64_t count, float* sigma) {
  for (int64_t i = 0; i < count; ++i) sigma[i] = cpu_math::exp_any(0.5f * lv[i]);
}

// z = mu + noise * sigma
GM_CPU_CLONES void sample_tile(const float* mu, const float* noise, const float* sigma,
                               int64_t count, float* z) {
  for (int64_t i = 0; i < count; ++i) z[i] = mu[i] + noise[i] * sigma[i];
}

// Sums over samples of grad_z and grad_z * noise.
GM_CPU_CLONES void accumulate_grad_tile(const float* g, const float* noise, int64_t count,
                                        float* g_sum, float* g_noise) {
  for (int64_t i = 0; i < count; ++i) {
    g_sum[i] += g[i];
    g_noise[i] += g[i] * noise[i];
  }
}

// grad_mu = sum(grad_z) + grad_kl * mu;
// grad_logvar = (sum(grad_z * noise) * sigma + grad_kl * (sigma^2 - 1)) / 2, in place over
// mu and sigma.
GM_CPU_CLONES void finish_grad_tile(const float* g_sum, const float* g_noise, float grad_kl,
                                    int64_t count, float* mu_to_grad_mu,
                                    float* sigma_to_grad_logvar) {
  for (int64_t i = 0; i < count; ++i) {
    const float s = sigma_to_grad_logvar[i];
    mu_to_grad_mu[i] = g_sum[i] + grad_kl * mu_to_grad_mu[i];
    sigma_to_grad_logvar[i] = 0.5f * (g_noise[i] * s + grad_kl * (s * s - 1.0f));
  }
}

// The [rows, cols] view of mu for `samples` samples.
struct Layout : RowChunks {
  int64_t samples;
  int64_t per_sample() const { return rows * cols; }
};

Layout make_layout(const at::Tensor& mu, int64_t num_samples) {
  const int64_t rows = mu.size(0);
  return {make_row_chunks(rows, mu.numel(), kChunk), num_samples};
}

// float16, bfloat16 and float32: float arithmetic, vectorized tiles.
template <typename scalar_t>
void forward_float(const scalar_t* mu, const scalar_t* lv, const scalar_t* eps, scalar_t* z,
                   scalar_t* kl, const Layout& L, PhiloxKey key) {
  std::vector<float> partial(L.rows * L.chunks_per_row, 0.0f);
  for_each_row_chunk(L, [&](int64_t row, int64_t c0, int64_t c1, int64_t task) {
    float mu_t[kTile], lv_t[kTile], sig_t[kTile], noise_t[kTile], z_t[kTile];
    float kl_sum = 0.0f;
    for (int64_t t0 = c0; t0 < c1; t0 += kTile) {
      const int64_t n = std::min(kTile, c1 - t0);
      const int64_t base = row * L.cols + t0;
      load_tile(mu + base, n, mu_t);
      load_tile(lv + base, n, lv_t);
      kl_sum += sigma_and_kl_tile(mu_t, lv_t, n, sig_t);
      for (int64_t s = 0; s < L.samples; ++s) {
        const int64_t idx = s * L.per_sample() + base;
        if (eps != nullptr) {
          load_tile(eps + idx, n, noise_t);
        } else {
          philox_normals(key, static_cast<uint64_t>(idx), n, noise_t);
        }
        sample_tile(mu_t, noise_t, sig_t, n, z_t);
        store_tile(z_t, n, z + idx);
      }
    }
    partial[task] = kl_sum;
  });
  const auto sums = sum_row_partials(partial, L);
  for (int64_t r = 0; r < L.rows; ++r) kl[r] = static_cast<scalar_t>(0.5f * sums[r]);
}

template <typename scalar_t>
void backward_float(const scalar_t* gz, const scalar_t* gkl, const scalar_t* mu,
                    const scalar_t* lv, const scalar_t* eps, scalar_t* gmu, scalar_t* glv,
                    const Layout& L, PhiloxKey key) {
  for_each_row_chunk(L, [&](int64_t row, int64_t c0, int64_t c1, int64_t) {
    float mu_t[kTile], lv_t[kTile], sig_t[kTile], noise_t[kTile], g_t[kTile];
    float gsum_t[kTile], gnoise_t[kTile];
    const float gk = static_cast<float>(gkl[row]);
    for (int64_t t0 = c0; t0 < c1; t0 += kTile) {
      const int64_t n = std::min(kTile, c1 - t0);
      const int64_t base = row * L.cols + t0;
      load_tile(mu + base, n, mu_t);
      load_tile(lv + base, n, lv_t);
      sigma_tile(lv_t, n, sig_t);
      std::fill(gsum_t, gsum_t + n, 0.0f);
      std::fill(gnoise_t, gnoise_t + n, 0.0f);
      for (int64_t s = 0; s < L.samples; ++s) {
        const int64_t idx = s * L.per_sample() + base;
        if (eps != nullptr) {
          load_tile(eps + idx, n, noise_t);
        } else {
          philox_normals(key, static_cast<uint64_t>(idx), n, noise_t);
        }
        load_tile(gz + idx, n, g_t);
        accumulate_grad_tile(g_t, noise_t, n, gsum_t, gnoise_t);
      }
      finish_grad_tile(gsum_t, gnoise_t, gk, n, mu_t, sig_t);
      store_tile(mu_t, n, gmu + base);
      store_tile(sig_t, n, glv + base);
    }
  });
}

// float64: the same passes in double with libm; the noise itself is float, as on every
// other backend.
void forward_double(const double* mu, const double* lv, const double* eps, double* z,
                    double* kl, const Layout& L, PhiloxKey key) {
  std::vector<double> partial(L.rows * L.chunks_per_row, 0.0);
  for_each_row_chunk(L, [&](int64_t row, int64_t c0, int64_t c1, int64_t task) {
    float noise_t[kTile];
    double kl_sum = 0.0;
    for (int64_t t0 = c0; t0 < c1; t0 += kTile) {
      const int64_t n = std::min(kTile, c1 - t0);
      const int64_t base = row * L.cols + t0;
      for (int64_t i = 0; i < n; ++i) {
        const double m = mu[base + i], v = lv[base + i];
        kl_sum += std::exp(v) + m * m - 1.0 - v;
      }
      for (int64_t s = 0; s < L.samples; ++s) {
        const int64_t idx = s * L.per_sample() + base;
        if (eps == nullptr) philox_normals(key, static_cast<uint64_t>(idx), n, noise_t);
        for (int64_t i = 0; i < n; ++i) {
          const double e = eps != nullptr ? eps[idx + i] : static_cast<double>(noise_t[i]);
          z[idx + i] = mu[base + i] + e * std::exp(0.5 * lv[base + i]);
        }
      }
    }
    partial[task] = kl_sum;
  });
  const auto sums = sum_row_partials(partial, L);
  for (int64_t r = 0; r < L.rows; ++r) kl[r] = 0.5 * sums[r];
}

void backward_double(const double* gz, const double* gkl, const double* mu, const double* lv,
                     const double* eps, double* gmu, double* glv, const Layout& L,
                     PhiloxKey key) {
  for_each_row_chunk(L, [&](int64_t row, int64_t c0, int64_t c1, int64_t) {
    float noise_t[kTile];
    double gsum_t[kTile], gnoise_t[kTile];
    const double gk = gkl[row];
    for (int64_t t0 = c0; t0 < c1; t0 += kTile) {
      const int64_t n = std::min(kTile, c1 - t0);
      const int64_t base = row * L.cols + t0;
      std::fill(gsum_t, gsum_t + n, 0.0);
      std::fill(gnoise_t, gnoise_t + n, 0.0);
      for (int64_t s = 0; s < L.samples; ++s) {
        const int64_t idx = s * L.per_sample() + base;
        if (eps == nullptr) philox_normals(key, static_cast<uint64_t>(idx), n, noise_t);
        for (int64_t i = 0; i < n; ++i) {
          const double e = eps != nullptr ? eps[idx + i] : static_cast<double>(noise_t[i]);
          gsum_t[i] += gz[idx + i];
          gnoise_t[i] += gz[idx + i] * e;
        }
      }
      for (int64_t i = 0; i < n; ++i) {
        const double v = lv[base + i];
        gmu[base + i] = gsum_t[i] + gk * mu[base + i];
        glv[base + i] = 0.5 * (gnoise_t[i] * std::exp(0.5 * v) + gk * std::expm1(v));
      }
    }
  });
}

template <typename scalar_t>
const scalar_t* optional_data(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<scalar_t>() : nullptr;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> reparameterize_kl_forward_cpu(
    const at::Tensor& mu_in, const at::Tensor& logvar_in, const std::optional<at::Tensor>& eps_in,
    int64_t seed, int64_t offset, int64_t num_samples) {
  check_reparameterize_kl_inputs(mu_in, logvar_in, eps_in, num_samples);
  check_device_type(mu_in, at::kCPU, "mu");
  const at::Tensor mu = mu_in.contiguous();
  const at::Tensor logvar = logvar_in.contiguous();
  const at::Tensor eps = eps_in.has_value() ? eps_in->contiguous() : at::Tensor();
  std::vector<int64_t> z_shape{num_samples};
  z_shape.insert(z_shape.end(), mu.sizes().begin(), mu.sizes().end());
  at::Tensor z = empty_output(z_shape, mu.options());
  at::Tensor kl = at::empty({mu.size(0)}, mu.options());
  if (mu.size(0) == 0) return {z, kl};
  const Layout layout = make_layout(mu, num_samples);
  const PhiloxKey key = make_philox_key(static_cast<uint64_t>(seed), static_cast<uint64_t>(offset));
  if (mu.scalar_type() == at::kDouble) {
    forward_double(mu.const_data_ptr<double>(), logvar.const_data_ptr<double>(),
                   optional_data<double>(eps), z.mutable_data_ptr<double>(),
                   kl.mutable_data_ptr<double>(), layout, key);
  } else {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(),
                                    "reparameterize_kl_forward_cpu", [&] {
      forward_float<scalar_t>(mu.const_data_ptr<scalar_t>(), logvar.const_data_ptr<scalar_t>(),
                              optional_data<scalar_t>(eps), z.mutable_data_ptr<scalar_t>(),
                              kl.mutable_data_ptr<scalar_t>(), layout, key);
    });
  }
  return {z, kl};
}

std::tuple<at::Tensor, at::Tensor> reparameterize_kl_backward_cpu(
    const at::Tensor& grad_z_in, const at::Tensor& grad_kl_in, const at::Tensor& mu_in,
    const at::Tensor& logvar_in, const std::optional<at::Tensor>& eps_in, int64_t seed,
    int64_t offset, int64_t num_samples) {
  check_reparameterize_kl_inputs(mu_in, logvar_in, eps_in, num_samples);
  check_reparameterize_kl_grads(grad_z_in, grad_kl_in, mu_in, num_samples);
  check_device_type(mu_in, at::kCPU, "mu");
  const at::Tensor mu = mu_in.contiguous();
  const at::Tensor logvar = logvar_in.contiguous();
  const at::Tensor eps = eps_in.has_value() ? eps_in->contiguous() : at::Tensor();
  const at::Tensor grad_z = grad_z_in.contiguous();
  const at::Tensor grad_kl = grad_kl_in.contiguous();
  at::Tensor grad_mu = empty_output_like(mu);
  at::Tensor grad_logvar = empty_output_like(logvar);
  if (mu.numel() == 0) return {grad_mu, grad_logvar};
  const Layout layout = make_layout(mu, num_samples);
  const PhiloxKey key = make_philox_key(static_cast<uint64_t>(seed), static_cast<uint64_t>(offset));
  if (mu.scalar_type() == at::kDouble) {
    backward_double(grad_z.const_data_ptr<double>(), grad_kl.const_data_ptr<double>(),
                    mu.const_data_ptr<double>(), logvar.const_data_ptr<double>(),
                    optional_data<double>(eps), grad_mu.mutable_data_ptr<double>(),
                    grad_logvar.mutable_data_ptr<double>(), layout, key);
  } else {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(),
                                    "reparameterize_kl_backward_cpu", [&] {
      backward_float<scalar_t>(grad_z.const_data_ptr<scalar_t>(),
                               grad_kl.const_data_ptr<scalar_t>(), mu.const_data_ptr<scalar_t>(),
                               logvar.const_data_ptr<scalar_t>(), optional_data<scalar_t>(eps),
                               grad_mu.mutable_data_ptr<scalar_t>(),
                               grad_logvar.mutable_data_ptr<scalar_t>(), layout, key);
    });
  }
  return {grad_mu, grad_logvar};
}

}  // namespace genmodels
