// CPU kernels of the cached PixelCNN samplers (see pixelcnn_sampling.h for the contract).
//
// One call samples the whole batch. Per sub-pixel step, the network is evaluated at one
// position for the output colour group that the step needs (groups before it are final
// from earlier steps): every convolution is a small GEMM [images, K_g] x [K_g, C_out / G]
// whose rows are gathered straight from the caches as runs of consecutive memory (one run
// per kernel row, plus the center tap's input-channel prefix), so nothing is copied into
// an im2col. The images are split between the threads for a whole image row (they are
// independent, and the random draws are made before the row), which costs one parallel
// region per row instead of one per layer and sub-pixel.
//
// Caches (all in the caller's zeroed workspace): each k x k convolution's input as a ring
// of the last k // 2 + 1 image rows, zero-padded by k // 2 columns on each side (rows above
// the image read a zero row); each 1x1 convolution's input at the current position.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/cpu_chunks.h"
#include "pixelcnn_sampling/pixelcnn_sampling.h"

namespace genmodels {
namespace {

constexpr int64_t kImagesPerTask = 4;

// --- packed convolutions -----------------------------------------------------------------

struct TapRun {
  int64_t dy, dx, taps;  // kernel row and first column relative to the center, length
};

struct ConvPlan {
  int64_t k, c, cin, cout, groups, per, np, kmax, knc;
  std::vector<TapRun> runs;
  std::vector<int64_t> prefix;  // center-tap input channels [0, prefix[g]) of group g
};

ConvPlan read_plan(const at::Tensor& meta, size_t index) {
  TORCH_CHECK(meta.device().is_cpu() && meta.scalar_type() == at::kLong && meta.dim() == 1,
              "metas[", index, "] must be a 1-D int64 CPU tensor");
  const at::Tensor m = meta.contiguous();
  const int64_t* p = m.const_data_ptr<int64_t>();
  const int64_t len = m.numel();
  TORCH_CHECK(len >= 8, "metas[", index, "] is too short");
  ConvPlan cv;
  cv.k = p[0], cv.cin = p[1], cv.cout = p[2], cv.groups = p[3];
  cv.per = p[4], cv.np = p[5], cv.kmax = p[6];
  const int64_t runs = p[7];
  TORCH_CHECK(cv.k >= 1 && cv.k % 2 == 1 && cv.cin >= 1 && cv.groups >= 1 && runs >= 0 &&
                  cv.per * cv.groups == cv.cout && cv.np >= cv.per &&
                  len == 8 + 3 * runs + cv.groups,
              "metas[", index, "] is not a packed convolution's description");
  cv.c = cv.k / 2;
  cv.knc = 0;
  for (int64_t r = 0; r < runs; ++r) {
    const int64_t ky = p[8 + 3 * r], first = p[9 + 3 * r], last = p[10 + 3 * r];
    TORCH_CHECK(ky >= 0 && ky <= cv.c && first >= 0 && first <= last && last < cv.k,
                "metas[", index, "] has a tap run outside the causal half of the kernel");
    cv.runs.push_back({ky - cv.c, first - cv.c, last - first + 1});
    cv.knc += (last - first + 1) * cv.cin;
  }
  for (int64_t g = 0; g < cv.groups; ++g) {
    const int64_t pre = p[8 + 3 * runs + g];
    TORCH_CHECK(pre >= 0 && pre <= cv.cin && cv.knc + pre <= cv.kmax, "metas[", index,
                "] has a center prefix out of range");
    cv.prefix.push_back(pre);
  }
  return cv;
}

// A cached layer input: a ring of `rows` image rows [rows][N][width][channels] (a column j
// sits at j + pad), or one position per image (`point`).
template <typename T>
struct Window {
  T* data = nullptr;
  int64_t rows = 1, n = 0, width = 1, pad = 0, channels = 0;
  bool point = false;
  T* at(int64_t row, int64_t b, int64_t col) const {
    const int64_t slot = rows == 1 ? 0 : row % rows;
    const int64_t w = point ? 0 : col + pad;
    return data + ((slot * n + b) * width + w) * channels;
  }
};

// Hands out consecutive pieces of the workspace; with no base it only counts.
template <typename T>
struct Arena {
  T* base;
  int64_t used = 0;
  T* take(int64_t count) {
    T* p = base ? base + used : nullptr;
    used += count;
    return p;
  }
  Window<T> ring(int64_t rows, int64_t n, int64_t size, int64_t pad, int64_t channels) {
    Window<T> w{nullptr, rows, n, size + 2 * pad, pad, channels, false};
    w.data = take(rows * n * w.width * channels);
    return w;
  }
  Window<T> point(int64_t n, int64_t channels) {
    Window<T> w{nullptr, 1, n, 1, 0, channels, true};
    w.data = take(n * channels);
    return w;
  }
};

// --- the GEMM over gathered runs ---------------------------------------------------------

// out[t, 0:2V] = bias + sum over runs r and q < len[r] of x[t][r][q] * w[row, 0:2V], for
// BT rows t at once; the rows of w follow the runs in order. GCC vector types: one clone per
// instruction set (GM_CPU_CLONES) picks the vector width.
template <typename T, int BT>
__attribute__((always_inline)) inline void gemm_tile(int64_t nr, const int64_t* len,
                                                     const T* const* xp, const T* w,
                                                     int64_t ldw, const T* bias, T* out,
                                                     int64_t ldo) {
  typedef T V __attribute__((vector_size(32)));
  constexpr int L = 32 / sizeof(T);
  V acc0[BT], acc1[BT], b0, b1;
  std::memcpy(&b0, bias, sizeof(V));
  std::memcpy(&b1, bias + L, sizeof(V));
  for (int t = 0; t < BT; ++t) acc0[t] = b0, acc1[t] = b1;
  for (int64_t r = 0; r < nr; ++r) {
    const T* x[BT];
    for (int t = 0; t < BT; ++t) x[t] = xp[t * nr + r];
    for (int64_t q = 0; q < len[r]; ++q, w += ldw) {
      V w0, w1;
      std::memcpy(&w0, w, sizeof(V));
      std::memcpy(&w1, w + L, sizeof(V));
      for (int t = 0; t < BT; ++t) {
        acc0[t] += x[t][q] * w0;
        acc1[t] += x[t][q] * w1;
      }
    }
  }
  for (int t = 0; t < BT; ++t) {
    std::memcpy(out + t * ldo, &acc0[t], sizeof(V));
    std::memcpy(out + t * ldo + L, &acc1[t], sizeof(V));
  }
}

template <typename T>
__attribute__((always_inline)) inline void gemm_rows_impl(int64_t m, int64_t nr,
                                                          const int64_t* len, const T* const* xp,
                                                          const T* w, int64_t np, const T* bias,
                                                          T* res) {
  constexpr int64_t kCols = 64 / sizeof(T);
  int64_t r = 0;
  for (; r + 4 <= m; r += 4)
    for (int64_t n0 = 0; n0 < np; n0 += kCols)
      gemm_tile<T, 4>(nr, len, xp + r * nr, w + n0, np, bias + n0, res + r * np + n0, np);
  for (; r < m; ++r)
    for (int64_t n0 = 0; n0 < np; n0 += kCols)
      gemm_tile<T, 1>(nr, len, xp + r * nr, w + n0, np, bias + n0, res + r * np + n0, np);
}

GM_CPU_CLONES void gemm_rows(int64_t m, int64_t nr, const int64_t* len, const float* const* xp,
                             const float* w, int64_t np, const float* bias, float* res) {
  gemm_rows_impl<float>(m, nr, len, xp, w, np, bias, res);
}

GM_CPU_CLONES void gemm_rows(int64_t m, int64_t nr, const int64_t* len, const double* const* xp,
                             const double* w, int64_t np, const double* bias, double* res) {
  gemm_rows_impl<double>(m, nr, len, xp, w, np, bias, res);
}

template <typename T>
struct Scratch {
  std::vector<T> res;
  std::vector<const T*> xp;
  std::vector<int64_t> len;
};

template <typename T>
Scratch<T>& scratch() {
  thread_local Scratch<T> s;
  return s;
}

template <typename T>
struct Conv {
  ConvPlan plan;
  const T* w;
  const T* bias;
};

// Output group g of `cv` at row i, columns [j0, j0 + nj), images [b0, b0 + nb): returns
// res[(b - b0) * nj + (j - j0)][0:np] (thread-local, valid until the next call).
template <typename T>
const T* conv_at(const Conv<T>& cv, int64_t g, const Window<T>& src, int64_t i, int64_t j0,
                 int64_t nj, int64_t b0, int64_t nb, const T* zeros) {
  const ConvPlan& p = cv.plan;
  Scratch<T>& s = scratch<T>();
  const int64_t pre = p.prefix[g];
  const int64_t runs = static_cast<int64_t>(p.runs.size());
  const int64_t nr = runs + (pre > 0 ? 1 : 0);
  const int64_t m = nb * nj;
  s.xp.resize(std::max<int64_t>(1, m * nr));
  s.len.resize(std::max<int64_t>(1, nr));
  s.res.resize(m * p.np);
  for (int64_t r = 0; r < runs; ++r) s.len[r] = p.runs[r].taps * p.cin;
  if (pre > 0) s.len[runs] = pre;
  for (int64_t b = 0; b < nb; ++b) {
    for (int64_t jj = 0; jj < nj; ++jj) {
      const T** xp = s.xp.data() + (b * nj + jj) * nr;
      const int64_t j = j0 + jj;
      for (int64_t r = 0; r < runs; ++r) {
        const TapRun& run = p.runs[r];
        const int64_t row = i + run.dy;
        xp[r] = row < 0 ? zeros : src.at(row, b0 + b, j + run.dx);
      }
      if (pre > 0) xp[runs] = src.at(i, b0 + b, j);
    }
  }
  gemm_rows(m, nr, s.len.data(), s.xp.data(), cv.w + g * p.kmax * p.np, p.np,
            cv.bias + g * p.np, s.res.data());
  return s.res.data();
}

template <typename T>
inline T relu(T v) {
  return v < T(0) ? T(0) : v;  // NaN stays NaN, as in torch.relu
}

template <typename T>
inline T gated(T a, T b) {
  return std::tanh(a) * (T(1) / (T(1) + std::exp(-b)));
}

// --- the two networks --------------------------------------------------------------------

template <typename T>
struct Common {
  int64_t n, channels, size, levels, groups;
  std::vector<Conv<T>> convs;
  std::vector<T> zeros;
  Window<T> x, logits;
  const T* cond = nullptr;

  void load(const std::vector<at::Tensor>& metas, const std::vector<at::Tensor>* weights,
            const std::vector<at::Tensor>* biases) {
    constexpr int64_t kCols = 64 / sizeof(T);
    int64_t widest = 1;
    for (size_t l = 0; l < metas.size(); ++l) {
      Conv<T> cv{read_plan(metas[l], l), nullptr, nullptr};
      if (weights) {
        TORCH_CHECK(cv.plan.np % kCols == 0, "metas[", l, "]: Np must be a multiple of ", kCols,
                    " for this dtype");
        const at::Tensor& w = (*weights)[l];
        const at::Tensor& b = (*biases)[l];
        TORCH_CHECK(w.is_contiguous() && w.sizes() == at::IntArrayRef({cv.plan.groups,
                                                                      cv.plan.kmax, cv.plan.np}),
                    "weights[", l, "] must be a contiguous [G, K, Np] tensor as metas[", l,
                    "] describes");
        TORCH_CHECK(b.is_contiguous() && b.sizes() == at::IntArrayRef({cv.plan.groups,
                                                                      cv.plan.np}),
                    "biases[", l, "] must be a contiguous [G, Np] tensor");
        cv.w = w.const_data_ptr<T>();
        cv.bias = b.const_data_ptr<T>();
      }
      widest = std::max(widest, cv.plan.k * cv.plan.cin);
      convs.push_back(cv);
    }
    zeros.assign(widest, T(0));
  }

  void expect(size_t l, int64_t cin, int64_t cout, const char* what) const {
    TORCH_CHECK(convs[l].plan.cin == cin && convs[l].plan.cout == cout, "metas[", l, "] (",
                what, ") must map ", cin, " to ", cout, " channels, got ", convs[l].plan.cin,
                " to ", convs[l].plan.cout);
  }

  void expect_groups(size_t l, int64_t g) const {
    TORCH_CHECK(convs[l].plan.groups == g, "metas[", l, "] must have ", g, " output groups");
  }
};

template <typename T>
struct PixelCNNNet : Common<T> {
  int64_t blocks = 0, hidden = 0;
  std::vector<Window<T>> mid, h, rh, m;
  Window<T> o1;

  void layout(Arena<T>& a) {
    mid.clear(), h.clear(), rh.clear(), m.clear();
    const auto& cv = this->convs;
    TORCH_CHECK(cv.size() >= 3 && cv.size() % 3 == 0, "PixelCNN: 3 * blocks + 3 convolutions");
    blocks = static_cast<int64_t>(cv.size()) / 3 - 1;
    hidden = cv[0].plan.cout;
    const int64_t half = blocks ? cv[1].plan.cout : 0, g = this->groups;
    this->expect(0, this->channels, hidden, "input");
    for (int64_t l = 0; l < blocks; ++l) {
      this->expect(1 + 3 * l, hidden, half, "block 1x1");
      this->expect(2 + 3 * l, half, half, "block kxk");
      this->expect(3 + 3 * l, half, hidden, "block 1x1");
    }
    this->expect(1 + 3 * blocks, hidden, hidden, "head");
    this->expect(2 + 3 * blocks, hidden, this->channels * this->levels, "head");
    for (size_t l = 0; l < cv.size(); ++l) this->expect_groups(l, g);
    const int64_t c0 = cv[0].plan.c;
    this->x = a.ring(c0 + 1, this->n, this->size, c0, this->channels);
    for (int64_t l = 0; l < blocks; ++l) {
      const int64_t c = cv[2 + 3 * l].plan.c;
      mid.push_back(a.ring(c + 1, this->n, this->size, c, half));
      m.push_back(a.point(this->n, half));
    }
    for (int64_t l = 0; l <= blocks; ++l) {
      h.push_back(a.point(this->n, hidden));
      rh.push_back(a.point(this->n, hidden));
    }
    o1 = a.point(this->n, hidden);
    this->logits = a.point(this->n, this->channels * this->levels);
  }

  int64_t cond_width() const { return hidden; }
  void row(int64_t, int64_t, int64_t) {}

  // Output group g of every layer at (i, j) for images [b0, b0 + nb).
  void step(int64_t i, int64_t j, int64_t g, int64_t b0, int64_t nb) {
    const auto& cv = this->convs;
    const T* z = this->zeros.data();
    const auto each = [&](const Conv<T>& conv, const T* res, auto&& body) {
      const int64_t per = conv.plan.per, o0 = g * per;
      for (int64_t bb = 0; bb < nb; ++bb)
        for (int64_t q = 0; q < per; ++q) body(b0 + bb, o0 + q, res[bb * conv.plan.np + q]);
    };
    each(cv[0], conv_at(cv[0], g, this->x, i, j, 1, b0, nb, z), [&](int64_t b, int64_t o, T v) {
      if (this->cond) v += this->cond[b * hidden + o];
      h[0].at(0, b, 0)[o] = v;
      rh[0].at(0, b, 0)[o] = relu(v);
    });
    for (int64_t l = 0; l < blocks; ++l) {
      const Conv<T>& c1 = cv[1 + 3 * l];
      const Conv<T>& ck = cv[2 + 3 * l];
      const Conv<T>& c2 = cv[3 + 3 * l];
      each(c1, conv_at(c1, g, rh[l], i, j, 1, b0, nb, z),
           [&](int64_t b, int64_t o, T v) { mid[l].at(i, b, j)[o] = relu(v); });
      each(ck, conv_at(ck, g, mid[l], i, j, 1, b0, nb, z),
           [&](int64_t b, int64_t o, T v) { m[l].at(0, b, 0)[o] = relu(v); });
      each(c2, conv_at(c2, g, m[l], i, j, 1, b0, nb, z), [&](int64_t b, int64_t o, T v) {
        const T out = h[l].at(0, b, 0)[o] + v;
        h[l + 1].at(0, b, 0)[o] = out;
        rh[l + 1].at(0, b, 0)[o] = relu(out);
      });
    }
    const Conv<T>& o1c = cv[1 + 3 * blocks];
    const Conv<T>& o2c = cv[2 + 3 * blocks];
    each(o1c, conv_at(o1c, g, rh[blocks], i, j, 1, b0, nb, z),
         [&](int64_t b, int64_t o, T v) { o1.at(0, b, 0)[o] = relu(v); });
    each(o2c, conv_at(o2c, g, o1, i, j, 1, b0, nb, z),
         [&](int64_t b, int64_t o, T v) { this->logits.at(0, b, 0)[o] = v; });
  }
};

template <typename T>
struct GatedNet : Common<T> {
  int64_t layers = 0, hidden = 0;
  std::vector<Window<T>> v, hrow, add, gate_out;
  Window<T> vpre, skips, rskips, o1;

  void layout(Arena<T>& a) {
    v.clear(), hrow.clear(), add.clear(), gate_out.clear();
    const auto& cv = this->convs;
    TORCH_CHECK(cv.size() >= 7 && (cv.size() - 2) % 5 == 0,
                "Gated PixelCNN: 5 * layers + 2 convolutions");
    layers = static_cast<int64_t>(cv.size() - 2) / 5;
    hidden = cv[3].plan.cout;
    const int64_t g = this->groups, n = this->n, size = this->size;
    for (int64_t l = 0; l < layers; ++l) {
      const int64_t in = l == 0 ? this->channels : hidden;
      this->expect(5 * l, in, 2 * hidden, "conv_v");
      this->expect(5 * l + 1, 2 * hidden, 2 * hidden, "v_to_h");
      this->expect(5 * l + 2, in, 2 * hidden, "conv_h");
      this->expect(5 * l + 3, hidden, hidden, "h_out");
      this->expect(5 * l + 4, hidden, hidden, "skip");
      this->expect_groups(5 * l, 1);
      this->expect_groups(5 * l + 1, 1);
      for (int64_t s = 2; s < 5; ++s) this->expect_groups(5 * l + s, g);
    }
    this->expect(5 * layers, hidden, hidden, "head");
    this->expect(5 * layers + 1, hidden, this->channels * this->levels, "head");
    this->expect_groups(5 * layers, g);
    this->expect_groups(5 * layers + 1, g);
    const int64_t c0 = std::max(cv[0].plan.c, cv[2].plan.c);
    this->x = a.ring(c0 + 1, n, size, c0, this->channels);
    for (int64_t l = 0; l + 1 < layers; ++l) {
      const int64_t cvn = cv[5 * (l + 1)].plan.c, chn = cv[5 * (l + 1) + 2].plan.c;
      v.push_back(a.ring(cvn + 1, n, size, cvn, hidden));
      hrow.push_back(a.ring(1, n, size, chn, hidden));
    }
    vpre = a.ring(1, n, size, 0, 2 * hidden);
    for (int64_t l = 0; l < layers; ++l) {
      add.push_back(a.ring(1, n, size, 0, 2 * hidden));
      gate_out.push_back(a.point(n, hidden));
    }
    skips = a.point(n, hidden);
    rskips = a.point(n, hidden);
    o1 = a.point(n, hidden);
    this->logits = a.point(n, this->channels * this->levels);
  }

  int64_t cond_width() const { return 2 * hidden; }
  const T* cond_of(int64_t l, int64_t which, int64_t b) const {
    return this->cond ? this->cond + ((l * 2 + which) * this->n + b) * 2 * hidden : nullptr;
  }

  // The vertical stack along row i (it sees rows above i only) and each layer's addend
  // v_to_h(v_pre) + cond_h for the horizontal stack, for images [b0, b0 + nb).
  void row(int64_t i, int64_t b0, int64_t nb) {
    const auto& cv = this->convs;
    const T* z = this->zeros.data();
    const int64_t size = this->size, two = 2 * hidden, half = hidden / this->groups;
    const Window<T>* src = &this->x;
    for (int64_t l = 0; l < layers; ++l) {
      const Conv<T>& vc = cv[5 * l];
      const T* res = conv_at(vc, 0, *src, i, 0, size, b0, nb, z);
      for (int64_t bb = 0; bb < nb; ++bb) {
        const int64_t b = b0 + bb;
        const T* cond = cond_of(l, 0, b);
        for (int64_t j = 0; j < size; ++j) {
          const T* r = res + (bb * size + j) * vc.plan.np;
          T* pre = vpre.at(i, b, j);
          for (int64_t q = 0; q < two; ++q) pre[q] = cond ? r[q] + cond[q] : r[q];
          if (l + 1 < layers) {
            T* out = v[l].at(i, b, j);
            for (int64_t gg = 0; gg < this->groups; ++gg)
              for (int64_t q = 0; q < half; ++q)
                out[gg * half + q] = gated(pre[2 * gg * half + q], pre[(2 * gg + 1) * half + q]);
          }
        }
      }
      const Conv<T>& vh = cv[5 * l + 1];
      res = conv_at(vh, 0, vpre, i, 0, size, b0, nb, z);
      for (int64_t bb = 0; bb < nb; ++bb) {
        const int64_t b = b0 + bb;
        const T* cond = cond_of(l, 1, b);
        for (int64_t j = 0; j < size; ++j) {
          const T* r = res + (bb * size + j) * vh.plan.np;
          T* out = add[l].at(i, b, j);
          for (int64_t q = 0; q < two; ++q) out[q] = cond ? r[q] + cond[q] : r[q];
        }
      }
      if (l + 1 < layers) src = &v[l];
    }
  }

  void step(int64_t i, int64_t j, int64_t g, int64_t b0, int64_t nb) {
    const auto& cv = this->convs;
    const T* z = this->zeros.data();
    const Window<T>* src = &this->x;
    for (int64_t l = 0; l < layers; ++l) {
      const Conv<T>& hc = cv[5 * l + 2];
      const int64_t half = hc.plan.per / 2;
      const T* res = conv_at(hc, g, *src, i, j, 1, b0, nb, z);
      for (int64_t bb = 0; bb < nb; ++bb) {
        const T* r = res + bb * hc.plan.np;
        const T* a = add[l].at(i, b0 + bb, j) + g * hc.plan.per;
        T* out = gate_out[l].at(0, b0 + bb, 0) + g * half;
        for (int64_t q = 0; q < half; ++q) out[q] = gated(r[q] + a[q], r[half + q] + a[half + q]);
      }
      const Conv<T>& sc = cv[5 * l + 4];
      res = conv_at(sc, g, gate_out[l], i, j, 1, b0, nb, z);
      for (int64_t bb = 0; bb < nb; ++bb) {
        T* s = skips.at(0, b0 + bb, 0) + g * sc.plan.per;
        for (int64_t q = 0; q < sc.plan.per; ++q) {
          const T r = res[bb * sc.plan.np + q];
          s[q] = l == 0 ? r : s[q] + r;
        }
      }
      if (l + 1 < layers) {
        const Conv<T>& oc = cv[5 * l + 3];
        res = conv_at(oc, g, gate_out[l], i, j, 1, b0, nb, z);
        for (int64_t bb = 0; bb < nb; ++bb) {
          const int64_t o0 = g * oc.plan.per;
          T* out = hrow[l].at(i, b0 + bb, j) + o0;
          const T* prev = src->at(i, b0 + bb, j) + o0;
          for (int64_t q = 0; q < oc.plan.per; ++q) {
            const T r = res[bb * oc.plan.np + q];
            out[q] = l > 0 ? r + prev[q] : r;  // layer 0 has no residual
          }
        }
        src = &hrow[l];
      }
    }
    const Conv<T>& o1c = cv[5 * layers];
    const Conv<T>& o2c = cv[5 * layers + 1];
    for (int64_t bb = 0; bb < nb; ++bb) {
      const int64_t o0 = g * o1c.plan.per;
      const T* s = skips.at(0, b0 + bb, 0) + o0;
      T* r = rskips.at(0, b0 + bb, 0) + o0;
      for (int64_t q = 0; q < o1c.plan.per; ++q) r[q] = relu(s[q]);
    }
    const T* res = conv_at(o1c, g, rskips, i, j, 1, b0, nb, z);
    for (int64_t bb = 0; bb < nb; ++bb) {
      T* out = o1.at(0, b0 + bb, 0) + g * o1c.plan.per;
      for (int64_t q = 0; q < o1c.plan.per; ++q) out[q] = relu(res[bb * o1c.plan.np + q]);
    }
    res = conv_at(o2c, g, o1, i, j, 1, b0, nb, z);
    for (int64_t bb = 0; bb < nb; ++bb) {
      T* out = this->logits.at(0, b0 + bb, 0) + g * o2c.plan.per;
      for (int64_t q = 0; q < o2c.plan.per; ++q) out[q] = res[bb * o2c.plan.np + q];
    }
  }
};

template <typename Net>
void setup(Net& net, const std::vector<at::Tensor>& metas, const std::vector<at::Tensor>* w,
           const std::vector<at::Tensor>* b, int64_t n, int64_t channels, int64_t size,
           int64_t levels) {
  TORCH_CHECK(n >= 0 && channels >= 1 && size >= 1 && levels >= 2,
              "pixelcnn_sampling: bad n, channels, size or levels");
  net.n = n, net.channels = channels, net.size = size, net.levels = levels;
  net.load(metas, w, b);
  TORCH_CHECK(!net.convs.empty(), "pixelcnn_sampling: no convolutions");
  net.groups = net.convs.back().plan.groups;
  TORCH_CHECK(net.groups == 1 || net.groups == channels,
              "pixelcnn_sampling: colour groups must be 1 or the number of channels");
}

// Index of the sample torch.multinomial(probs, 1) draws given its exponential noise q:
// argmax(probs / q), the first maximum, a NaN counting as the maximum (as torch.argmax).
inline int64_t draw_level(const float* probs, const float* q, int64_t levels) {
  int64_t best = 0;
  float best_value = probs[0] / q[0];
  if (std::isnan(best_value)) return 0;
  for (int64_t l = 1; l < levels; ++l) {
    const float v = probs[l] / q[l];
    if (std::isnan(v)) return l;
    if (v > best_value) best = l, best_value = v;
  }
  return best;
}

// The random draws do not depend on the logits: torch.multinomial(probs, 1, generator=g)
// is argmax(probs / q) with q = empty_like(probs).exponential_(1, g). So the main thread
// draws a whole row's q first, in the naive sampler's order (columns, then channels), and
// the threads then sample their images through the row with no barrier per sub-pixel.
template <typename T, typename Net>
void run(Net& net, at::Tensor& x, std::optional<at::Tensor>& logits_out, at::Tensor& workspace,
         std::optional<at::Generator>& generator) {
  const int64_t n = net.n, channels = net.channels, size = net.size, levels = net.levels;
  T* base = workspace.data_ptr<T>();
  auto xa = x.accessor<int64_t, 4>();
  const at::Tensor logits_all =
      workspace.narrow(0, net.logits.data - base, n * channels * levels).view({n, -1});
  const T scale = static_cast<T>(2.0 / static_cast<double>(levels - 1));
  const auto noise_options = at::TensorOptions().dtype(at::kFloat);
  std::vector<at::Tensor> noise(size * channels);
  for (int64_t i = 0; i < size; ++i) {
    for (auto& q : noise) q = at::empty({n, levels}, noise_options).exponential_(1, generator);
    at::parallel_for(0, n, kImagesPerTask, [&](int64_t b0, int64_t b1) {
      const int64_t nb = b1 - b0;
      net.row(i, b0, nb);
      for (int64_t j = 0; j < size; ++j) {
        int64_t computed = -1;
        for (int64_t c = 0; c < channels; ++c) {
          const int64_t g = c * net.groups / channels;
          if (g != computed) {
            net.step(i, j, g, b0, nb);
            computed = g;
          }
          const at::Tensor lg = logits_all.narrow(0, b0, nb).narrow(1, c * levels, levels);
          const at::Tensor probs = lg.to(at::kFloat).softmax(1).contiguous();
          const float* p = probs.const_data_ptr<float>();
          const float* q = noise[j * channels + c].const_data_ptr<float>() + b0 * levels;
          for (int64_t bb = 0; bb < nb; ++bb) {
            const int64_t b = b0 + bb;
            const int64_t d = draw_level(p + bb * levels, q + bb * levels, levels);
            xa[b][c][i][j] = d;
            // to_unit in the model's dtype: level * (2 / (levels - 1)) - 1
            const T product = static_cast<T>(d) * scale;
            net.x.at(i, b, j)[c] = product - T(1);
          }
          if (logits_out)
            logits_out->narrow(0, b0, nb).select(4, j).select(3, i).select(2, c).copy_(lg);
        }
      }
    });
  }
}

template <typename T, typename Net>
void sample_net(Net& net, at::Tensor& x, std::optional<at::Tensor>& logits,
                at::Tensor& workspace, const std::vector<at::Tensor>& weights,
                const std::vector<at::Tensor>& biases, const std::vector<at::Tensor>& metas,
                std::optional<at::Tensor>& cond, int64_t levels,
                std::optional<at::Generator>& generator) {
  const int64_t n = x.size(0);
  setup(net, metas, &weights, &biases, n, x.size(1), x.size(2), levels);
  Arena<T> sizing{nullptr};
  net.layout(sizing);
  TORCH_CHECK(workspace.numel() >= sizing.used, "workspace must hold ", sizing.used,
              " elements, got ", workspace.numel());
  if (cond) {
    const int64_t width = cond->size(-1);
    TORCH_CHECK(cond->size(-2) == n && width == net.cond_width(), "cond must have ", n,
                " images of ", net.cond_width(), " channels, got ", cond->sizes());
    net.cond = cond->const_data_ptr<T>();
  }
  Arena<T> arena{workspace.data_ptr<T>()};
  net.layout(arena);
  run<T>(net, x, logits, workspace, generator);
}

}  // namespace

int64_t pixelcnn_sampling_workspace_cpu(const std::string& model,
                                        const std::vector<at::Tensor>& metas, int64_t n,
                                        int64_t channels, int64_t size, int64_t levels) {
  TORCH_CHECK(model == "pixelcnn" || model == "gated", "model must be 'pixelcnn' or 'gated'");
  Arena<float> sizing{nullptr};
  if (model == "pixelcnn") {
    PixelCNNNet<float> net;
    setup(net, metas, nullptr, nullptr, n, channels, size, levels);
    net.layout(sizing);
  } else {
    GatedNet<float> net;
    setup(net, metas, nullptr, nullptr, n, channels, size, levels);
    net.layout(sizing);
  }
  return sizing.used;
}

void pixelcnn_sampling_sample_cpu(const std::string& model, at::Tensor x,
                                  std::optional<at::Tensor> logits, at::Tensor workspace,
                                  const std::vector<at::Tensor>& weights,
                                  const std::vector<at::Tensor>& biases,
                                  const std::vector<at::Tensor>& metas,
                                  std::optional<at::Tensor> cond, int64_t levels,
                                  std::optional<at::Generator> generator) {
  TORCH_CHECK(model == "pixelcnn" || model == "gated", "model must be 'pixelcnn' or 'gated'");
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kLong && x.dim() == 4 &&
                  x.is_contiguous() && x.size(2) == x.size(3),
              "x must be a contiguous int64 CPU tensor [N, C, H, H]");
  TORCH_CHECK(weights.size() == metas.size() && biases.size() == metas.size(),
              "weights, biases and metas must have one entry per convolution");
  TORCH_CHECK(!weights.empty(), "no convolutions");
  const at::ScalarType dtype = weights[0].scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, "weights must be float32 or float64");
  for (size_t l = 0; l < weights.size(); ++l) {
    TORCH_CHECK(weights[l].device().is_cpu() && weights[l].scalar_type() == dtype &&
                    biases[l].device().is_cpu() && biases[l].scalar_type() == dtype,
                "weights[", l, "] and biases[", l, "] must be CPU tensors of weights[0]'s dtype");
  }
  TORCH_CHECK(workspace.device().is_cpu() && workspace.scalar_type() == dtype &&
                  workspace.dim() == 1 && workspace.is_contiguous(),
              "workspace must be a contiguous 1-D CPU tensor of the weights' dtype");
  const int64_t n = x.size(0), channels = x.size(1), size = x.size(2);
  if (logits) {
    TORCH_CHECK(logits->device().is_cpu() && logits->scalar_type() == dtype &&
                    logits->sizes() == at::IntArrayRef({n, levels, channels, size, size}),
                "logits must be a CPU tensor [N, levels, C, H, W] of the weights' dtype");
  }
  if (cond) {
    TORCH_CHECK(cond->device().is_cpu() && cond->scalar_type() == dtype && cond->is_contiguous(),
                "cond must be a contiguous CPU tensor of the weights' dtype");
    if (model == "gated") {
      const int64_t layers = (static_cast<int64_t>(metas.size()) - 2) / 5;
      TORCH_CHECK(cond->dim() == 4 && cond->size(0) == layers && cond->size(1) == 2,
                  "cond must be [layers, 2, N, 2 * hidden]");
    } else {
      TORCH_CHECK(cond->dim() == 2, "cond must be [N, hidden]");
    }
  }
  if (n == 0) return;
  AT_DISPATCH_FLOATING_TYPES(dtype, "pixelcnn_sampling_sample_cpu", [&] {
    if (model == "pixelcnn") {
      PixelCNNNet<scalar_t> net;
      sample_net<scalar_t>(net, x, logits, workspace, weights, biases, metas, cond, levels,
                           generator);
    } else {
      GatedNet<scalar_t> net;
      sample_net<scalar_t>(net, x, logits, workspace, weights, biases, metas, cond, levels,
                           generator);
    }
  });
}

}  // namespace genmodels
