#pragma once
// The CPU engine shared by the PixelRNN recurrences (row_lstm, diagonal_lstm).
//
// Both ops are LSTMs over image positions that run in steps: the positions of one step
// (a row, an anti-diagonal) depend only on earlier steps, through `taps` state-to-state
// taps (a position's source of tap t, or none) and one cell-state predecessor. An op
// describes that geometry as a Plan; the engine runs it.
//
// State is kept in the accumulation type A (float for float16/bfloat16/float32, double
// for float64) in position-major buffers [B, H*W, C] (h, c) and [B, H*W, 4C] (gate
// pre-activations), so that every (batch, position) row of C or 4C channels is contiguous.
// One step is
//   col[N, taps*C]  <- the sources' h (zero where there is none), N = B * positions
//   pre[N, 4C]      =  col @ Wt  (one GEMM, at::mm on preallocated buffers)
//   cell            :  pre + gates_x + bias -> i, f, g, o; c = f c_prev + i g; h = o tanh(c)
// Backward walks the steps in reverse. It keeps only h and c from the forward pass and
// recomputes each step's gates with the same GEMM: saving the activated gates would take
// 4C values per position instead of 2C, and the recompute is a third of backward's GEMMs.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <tuple>
#include <vector>

#include "common/cpu_chunks.h"
#include "common/cpu_math.h"
#include "common/lstm_layout.h"

namespace genmodels {

namespace lstm_detail {

inline float sigmoid(float x) { return cpu_math::sigmoid_any(x); }
inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
inline float tanh(float x) { return cpu_math::tanh_any(x); }
inline double tanh(double x) { return std::tanh(x); }

// col rows q = b * n + i of the step whose positions are pos[first .. first + n).
template <typename A>
void gather_col(const LstmPlan& plan, int64_t first, int64_t n, int64_t batch, int64_t C,
                const A* h, A* col) {
  const int64_t K = plan.taps * C;
  const int64_t HW = plan.positions;
  at::parallel_for(0, batch * n, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, K)),
                   [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t b = q / n, i = q % n;
      A* row = col + q * K;
      for (int64_t t = 0; t < plan.taps; ++t) {
        const int64_t src = plan.tap_src[(first + i) * plan.taps + t];
        A* dst = row + t * C;
        if (src < 0) {
          for (int64_t ch = 0; ch < C; ++ch) dst[ch] = A(0);
        } else {
          const A* s = h + (b * HW + src) * C;
          for (int64_t ch = 0; ch < C; ++ch) dst[ch] = s[ch];
        }
      }
    }
  });
}

// gx already holds gates_x + bias; c_prev points at zeros where there is no predecessor.
// Every pointer is its own region (restrict), so the loop vectorizes without alias checks.
template <typename A>
__attribute__((always_inline)) inline void cell_forward_impl(const A* __restrict__ pre,
                                                             const A* __restrict__ gx,
                                                             const A* __restrict__ c_prev,
                                                             int64_t C, A* __restrict__ h,
                                                             A* __restrict__ c) {
  for (int64_t ch = 0; ch < C; ++ch) {
    const A gi = pre[ch] + gx[ch], gf = pre[C + ch] + gx[C + ch];
    const A gg = pre[2 * C + ch] + gx[2 * C + ch], go = pre[3 * C + ch] + gx[3 * C + ch];
    const A cn = sigmoid(gf) * c_prev[ch] + sigmoid(gi) * tanh(gg);
    c[ch] = cn;
    h[ch] = sigmoid(go) * tanh(cn);
  }
}

// In: pre (the GEMM part), gx (gates_x + bias), c_prev (zeros without a predecessor), c,
// dh, dc_in (the cell gradient arriving from the successor). Out: dpre (gate
// pre-activation gradients) and dc_prev (added to the predecessor's cell gradient, or to
// a scratch row without one).
template <typename A>
__attribute__((always_inline)) inline void cell_backward_impl(
    const A* __restrict__ pre, const A* __restrict__ gx, const A* __restrict__ c_prev,
    const A* __restrict__ c, const A* __restrict__ dh, const A* __restrict__ dc_in, int64_t C,
    A* __restrict__ dpre, A* __restrict__ dc_prev) {
  for (int64_t ch = 0; ch < C; ++ch) {
    const A gi = pre[ch] + gx[ch], gf = pre[C + ch] + gx[C + ch];
    const A gg = pre[2 * C + ch] + gx[2 * C + ch], go = pre[3 * C + ch] + gx[3 * C + ch];
    const A i = sigmoid(gi), f = sigmoid(gf), g = tanh(gg), o = sigmoid(go);
    const A tc = tanh(c[ch]);
    const A dcell = dc_in[ch] + dh[ch] * o * (A(1) - tc * tc);
    dpre[ch] = dcell * g * i * (A(1) - i);
    dpre[C + ch] = dcell * c_prev[ch] * f * (A(1) - f);
    dpre[2 * C + ch] = dcell * i * (A(1) - g * g);
    dpre[3 * C + ch] = dh[ch] * tc * o * (A(1) - o);
    dc_prev[ch] += dcell * f;
  }
}

// Internal linkage: the clones of each including file are its own (target_clones
// functions cannot be inline).
namespace {
// flatten: GCC leaves the exp polynomials uninlined otherwise, and the loop scalar.
GM_CPU_CLONES __attribute__((flatten)) void cell_forward_row(const float* pre, const float* gx,
                                                            const float* c_prev, int64_t C,
                                                            float* h, float* c) {
  cell_forward_impl<float>(pre, gx, c_prev, C, h, c);
}
GM_CPU_CLONES void cell_forward_row(const double* pre, const double* gx, const double* c_prev,
                                    int64_t C, double* h, double* c) {
  cell_forward_impl<double>(pre, gx, c_prev, C, h, c);
}
GM_CPU_CLONES __attribute__((flatten)) void cell_backward_row(const float* pre, const float* gx,
                                                             const float* c_prev, const float* c,
                                                             const float* dh, const float* dc_in,
                                                             int64_t C, float* dpre,
                                                             float* dc_prev) {
  cell_backward_impl<float>(pre, gx, c_prev, c, dh, dc_in, C, dpre, dc_prev);
}
GM_CPU_CLONES void cell_backward_row(const double* pre, const double* gx, const double* c_prev,
                                     const double* c, const double* dh, const double* dc_in,
                                     int64_t C, double* dpre, double* dc_prev) {
  cell_backward_impl<double>(pre, gx, c_prev, c, dh, dc_in, C, dpre, dc_prev);
}
}  // namespace

template <typename A>
at::Tensor rows_of(const at::Tensor& buf, int64_t rows, int64_t cols) {
  return buf.narrow(0, 0, rows * cols).view({rows, cols});
}

}  // namespace lstm_detail

// Forward. gx [B, HW, 4C] (gates_x + bias), wt [taps*C, 4C] (contiguous, type A).
// Returns h [B, HW, C] and c [B, HW, C] in type A.
template <typename A>
void lstm_recurrence_forward(const LstmPlan& plan, const at::Tensor& gx, const at::Tensor& wt,
                             int64_t batch, int64_t C, at::Tensor& h, at::Tensor& c) {
  using namespace lstm_detail;
  const int64_t HW = plan.positions, K = plan.taps * C, G = 4 * C;
  const int64_t nmax = batch * plan.max_step();
  at::Tensor col = at::empty({nmax * K}, gx.options());
  at::Tensor pre = at::empty({nmax * G}, gx.options());
  const at::Tensor zeros = at::zeros({C}, gx.options());
  const A* zp = zeros.const_data_ptr<A>();
  const A* gxp = gx.const_data_ptr<A>();
  A* hp = h.mutable_data_ptr<A>();
  A* cp = c.mutable_data_ptr<A>();
  for (int64_t s = 0; s < plan.steps(); ++s) {
    const int64_t first = plan.step_begin[s], n = plan.step_begin[s + 1] - first;
    const int64_t N = batch * n;
    if (N == 0) continue;
    gather_col<A>(plan, first, n, batch, C, hp, col.mutable_data_ptr<A>());
    at::Tensor pre_s = rows_of<A>(pre, N, G);
    at::mm_out(pre_s, rows_of<A>(col, N, K), wt);
    const A* prep = pre_s.const_data_ptr<A>();
    at::parallel_for(0, N, std::max<int64_t>(1, 2048 / G), [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q) {
        const int64_t b = q / n, i = q % n;
        const int64_t p = plan.pos[first + i], cs = plan.cell_src[first + i];
        const int64_t here = b * HW + p;
        cell_forward_row(prep + q * G, gxp + here * G, cs < 0 ? zp : cp + (b * HW + cs) * C,
                         C, hp + here * C, cp + here * C);
      }
    });
  }
}

// Backward. dh [B, HW, C] (type A, consumed: gradients from later steps are added into it).
// Returns dgx [B, HW, 4C] and dwt [taps*C, 4C] in type A (the bias gradient is the sum of
// dgx over positions).
//
// Every h is known here, so the recomputed state-to-state part of all gates is one GEMM
// over all positions before the sweep, and the weight gradient one GEMM after it; only
// the state gradient's GEMM (dpre @ W) is per step. Same FLOPs as three GEMMs a step, in
// larger, better-blocked products.
template <typename A>
void lstm_recurrence_backward(const LstmPlan& plan, const at::Tensor& gx, const at::Tensor& wt,
                              const at::Tensor& h, const at::Tensor& c, at::Tensor& dh,
                              int64_t batch, int64_t C, at::Tensor& dgx, at::Tensor& dwt) {
  using namespace lstm_detail;
  const int64_t HW = plan.positions, K = plan.taps * C, G = 4 * C;
  const int64_t nmax = batch * plan.max_step();
  const int64_t entries = static_cast<int64_t>(plan.pos.size());
  // col of every position, row b * HW + p: all steps gathered at once.
  at::Tensor col = at::empty({batch * HW, K}, gx.options());
  {
    const A* hp = h.const_data_ptr<A>();
    A* colp = col.mutable_data_ptr<A>();
    at::parallel_for(0, batch * entries, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, K)),
                     [&](int64_t e0, int64_t e1) {
      for (int64_t e = e0; e < e1; ++e) {
        const int64_t b = e / entries, at_e = e % entries;
        A* row = colp + (b * HW + plan.pos[at_e]) * K;
        for (int64_t t = 0; t < plan.taps; ++t) {
          const int64_t src = plan.tap_src[at_e * plan.taps + t];
          A* dst = row + t * C;
          if (src < 0) {
            for (int64_t ch = 0; ch < C; ++ch) dst[ch] = A(0);
          } else {
            const A* from = hp + (b * HW + src) * C;
            for (int64_t ch = 0; ch < C; ++ch) dst[ch] = from[ch];
          }
        }
      }
    });
  }
  const at::Tensor pre = at::mm(col, wt);  // [B * HW, 4C]
  at::Tensor dpre = at::empty({nmax * G}, gx.options());
  at::Tensor dcol = at::empty({nmax * K}, gx.options());
  at::Tensor dc = at::zeros({batch, HW, C}, gx.options());
  const at::Tensor zeros = at::zeros({C}, gx.options());
  // Where the cell gradient of positions without a predecessor goes (one row each).
  at::Tensor sink = at::empty({nmax * C}, gx.options());
  const at::Tensor w = wt.t();  // [4C, K]
  const A* zp = zeros.const_data_ptr<A>();
  A* sinkp = sink.mutable_data_ptr<A>();
  const A* gxp = gx.const_data_ptr<A>();
  const A* prep = pre.const_data_ptr<A>();
  const A* cp = c.const_data_ptr<A>();
  A* dhp = dh.mutable_data_ptr<A>();
  A* dcp = dc.mutable_data_ptr<A>();
  A* dgxp = dgx.mutable_data_ptr<A>();
  for (int64_t s = plan.steps() - 1; s >= 0; --s) {
    const int64_t first = plan.step_begin[s], n = plan.step_begin[s + 1] - first;
    const int64_t N = batch * n;
    if (N == 0) continue;
    at::Tensor dpre_s = rows_of<A>(dpre, N, G);
    A* dprep = dpre_s.mutable_data_ptr<A>();
    // Cell predecessors are distinct positions within a step, so the dc_prev writes of
    // different rows never meet.
    at::parallel_for(0, N, std::max<int64_t>(1, 2048 / G), [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q) {
        const int64_t b = q / n, i = q % n;
        const int64_t p = plan.pos[first + i], cs = plan.cell_src[first + i];
        const int64_t here = b * HW + p;
        const bool has_prev = cs >= 0;
        cell_backward_row(prep + here * G, gxp + here * G,
                          has_prev ? cp + (b * HW + cs) * C : zp, cp + here * C,
                          dhp + here * C, dcp + here * C, C, dprep + q * G,
                          has_prev ? dcp + (b * HW + cs) * C : sinkp + q * C);
        A* dst = dgxp + here * G;
        const A* src = dprep + q * G;
        for (int64_t k = 0; k < G; ++k) dst[k] = src[k];
      }
    });
    if (s == 0) break;  // the first step's sources are all outside the image
    at::Tensor dcol_s = rows_of<A>(dcol, N, K);
    at::mm_out(dcol_s, dpre_s, w);
    const A* dcolp = dcol_s.const_data_ptr<A>();
    // Several positions of a step may feed one source: each batch element's sources are
    // accumulated by one thread, in a fixed order.
    at::parallel_for(0, batch, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        for (int64_t i = 0; i < n; ++i) {
          const A* row = dcolp + (b * n + i) * K;
          for (int64_t t = 0; t < plan.taps; ++t) {
            const int64_t src = plan.tap_src[(first + i) * plan.taps + t];
            if (src < 0) continue;
            A* dst = dhp + (b * HW + src) * C;
            const A* from = row + t * C;
            for (int64_t ch = 0; ch < C; ++ch) dst[ch] += from[ch];
          }
        }
      }
    });
  }
  at::mm_out(dwt, col.t(), dgx.view({batch * HW, G}));
}

// The torch boundary of both ops: gates_x [B, 4C, H, W] (any dtype and layout), weight
// [4C, C, taps], bias [4C] or none. Returns (h in gates_x's dtype and memory format,
// h state, c state), the states [B, H, W, C] in the accumulation type for backward.
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_forward_cpu(
    const LstmPlan& plan, const at::Tensor& gates_x, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias) {
  const at::ScalarType acc = lstm_acc_type(gates_x);
  const int64_t B = gates_x.size(0), C = gates_x.size(1) / 4;
  const int64_t H = gates_x.size(2), W = gates_x.size(3);
  const auto opts = gates_x.options().dtype(acc);
  at::Tensor h = at::empty({B, H, W, C}, opts);
  at::Tensor c = at::empty({B, H, W, C}, opts);
  if (h.numel() > 0) {
    const at::Tensor gx = lstm_position_major(gates_x, acc, bias);
    const at::Tensor wt = lstm_weight_rhs(weight, acc);
    AT_DISPATCH_FLOATING_TYPES(acc, "lstm_forward_cpu", [&] {
      lstm_recurrence_forward<scalar_t>(plan, gx, wt, B, C, h, c);
    });
  }
  return {lstm_image_major(h, gates_x), h, c};
}

// Gradients (gates_x like gates_x, weight contiguous, bias [4C] even when there is none).
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_backward_cpu(
    const LstmPlan& plan, const at::Tensor& grad_h, const at::Tensor& gates_x,
    const at::Tensor& weight, const std::optional<at::Tensor>& bias, const at::Tensor& h,
    const at::Tensor& c) {
  const at::ScalarType acc = lstm_acc_type(gates_x);
  const int64_t B = gates_x.size(0), G = gates_x.size(1), C = G / 4;
  const int64_t H = gates_x.size(2), W = gates_x.size(3), taps = weight.size(2);
  const auto opts = gates_x.options().dtype(acc);
  at::Tensor dgx = at::empty({B, H, W, G}, opts);
  at::Tensor dwt = at::zeros({taps * C, G}, opts);
  if (dgx.numel() > 0) {
    // Later steps' gradients are added into dh: it is a fresh copy.
    at::Tensor dh = at::empty({B, H, W, C}, opts);
    dh.copy_(grad_h.permute({0, 2, 3, 1}));
    const at::Tensor gx = lstm_position_major(gates_x, acc, bias);
    const at::Tensor wt = lstm_weight_rhs(weight, acc);
    const at::Tensor hs = h.to(acc).contiguous(), cs = c.to(acc).contiguous();
    AT_DISPATCH_FLOATING_TYPES(acc, "lstm_backward_cpu", [&] {
      lstm_recurrence_backward<scalar_t>(plan, gx, wt, hs, cs, dh, B, C, dgx, dwt);
    });
  }
  const at::Tensor db = dgx.view({-1, G}).sum(0);
  at::Tensor grad_w = at::empty(weight.sizes(), weight.options());
  grad_w.copy_(dwt.view({taps, C, G}).permute({2, 1, 0}));
  at::Tensor grad_b = at::empty({G}, weight.options());
  grad_b.copy_(db);
  return {lstm_image_major(dgx, gates_x), grad_w, grad_b};
}

}  // namespace genmodels
