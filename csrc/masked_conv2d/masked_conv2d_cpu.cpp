// CPU kernels of masked_conv2d. Two formulations, both computing only the kept taps
// (cpu_path below picks one):
//
// 1. Active-tap im2col + GEMM (float16 and float64): only the kept taps are gathered, so the
//    GEMM after it (at::mm, the formulation of masked_conv2d_checks.h) does no work on
//    masked taps. The pixels are cut into chunks of up to 512 rows whose im2col block
//    stays in cache: each thread gathers a chunk and multiplies it right away with a
//    single-threaded GEMM (at::mm inside at::parallel_for does not spawn threads), instead
//    of writing the whole [M, T * C] im2col to memory and reading it back. The gather
//    copies contiguous C-channel rows of an NHWC tensor, so it is dtype-agnostic. It runs
//    within ~10% of a bare at::mm on a precomputed im2col. A lone center tap (1x1) skips
//    the gather: its im2col is the NHWC input, and one whole-tensor GEMM is used.
// 2. Rectangles (float32 and bfloat16): the kept taps are covered by a few rectangles of
//    the kernel (masked_conv2d_rects.h), each a dense convolution of a shifted input run by
//    oneDNN (at::conv2d / at::convolution_backward), whose AVX-512 kernels outrun MKL's
//    GEMM on AMD processors by about 2x (cpu_path below).
//
// Earlier measurements on the 2-core EPYC this was written on (B=16, C=64, 28x28, fp32, one thread,
// full forward + backward; the other core busy): 7x7 mask B 89 ms with (1), 79 ms with (2),
// 133 ms for the weight * mask recipe; 3x3 mask B 20 ms with either, 26 ms for the recipe.
// Per-tap GEMMs on a padded channels-last input (a third option) compute over the padded
// width (34% extra rows at 7x7 / 28x28) with K = C_in only and re-read the output once per
// tap: 58 ms forward vs 40 ms for (1) at 7x7, equal at 3x3, so they are not used.
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "masked_conv2d/masked_conv2d.h"
#include "masked_conv2d/masked_conv2d_checks.h"
#include "masked_conv2d/masked_conv2d_rects.h"

namespace genmodels {
namespace {

// im2col block per chunk: 64 to 512 pixels. Fewer rows make the GEMM repack its weight
// operand too often, and each chunk costs a few tensor views and a GEMM call: 48 to 256
// rows measured within noise of each other for 7x7 and 3x3 at C=64, and 512 about 1.5%
// faster than 256 for the PixelCNN step at 8x8 (32 hidden channels, one and two threads;
// benchmarks/results/cpu-issue15-pixelcnn.md), so the cap is 512 rows or 2 MiB.
constexpr int64_t kChunkBytes = 2 * 1024 * 1024;

struct Geometry {
  int64_t n, h, w, c;
  int64_t pixels() const { return n * h * w; }
};

// Kept taps in one kernel row with consecutive columns are consecutive both in an im2col
// row and in the NHWC source (neighbouring pixels), so they are gathered by one copy.
struct TapRun {
  int64_t first_tap, dy, dx, len;
};

std::vector<TapRun> tap_runs(const TapOffsets& off) {
  std::vector<TapRun> runs;
  for (int64_t t = 0; t < static_cast<int64_t>(off.dy.size()); ++t) {
    if (!runs.empty()) {
      TapRun& r = runs.back();
      if (r.dy == off.dy[t] && r.dx + r.len == off.dx[t]) {
        ++r.len;
        continue;
      }
    }
    runs.push_back({t, off.dy[t], off.dx[t], 1});
  }
  return runs;
}

// Gathers pixels [p0, p1) of src (NHWC, contiguous) into dst [(p1 - p0), T * C]:
// dst[p - p0, t * C + c] = src[p + d_t, c], zero outside the image.
void im2col_rows(const char* src, char* dst, const Geometry& g, const std::vector<TapRun>& runs,
                 int64_t taps, int64_t elem, int64_t p0, int64_t p1) {
  const int64_t row_bytes = g.c * elem;
  for (int64_t p = p0; p < p1; ++p, dst += taps * row_bytes) {
    const int64_t b = p / (g.h * g.w), y = (p / g.w) % g.h, x = p % g.w;
    for (const TapRun& r : runs) {
      char* out = dst + r.first_tap * row_bytes;
      const int64_t yy = y + r.dy;
      if (yy < 0 || yy >= g.h) {
        std::memset(out, 0, r.len * row_bytes);
        continue;
      }
      // columns x + dx .. x + dx + len - 1, of which [lo, hi) lie inside the image
      const int64_t x0 = x + r.dx;
      const int64_t lo = std::max<int64_t>(0, -x0), hi = std::min<int64_t>(r.len, g.w - x0);
      if (hi <= lo) {
        std::memset(out, 0, r.len * row_bytes);
        continue;
      }
      if (lo > 0) std::memset(out, 0, lo * row_bytes);
      std::memcpy(out + lo * row_bytes, src + ((b * g.h + yy) * g.w + x0 + lo) * row_bytes,
                  (hi - lo) * row_bytes);
      if (hi < r.len) std::memset(out + hi * row_bytes, 0, (r.len - hi) * row_bytes);
    }
  }
}

int64_t chunk_rows(int64_t m, int64_t row_bytes) {
  const int64_t threads = at::get_num_threads();
  int64_t rows = std::clamp<int64_t>(kChunkBytes / std::max<int64_t>(1, row_bytes), 64, 512);
  // at least a few chunks per thread so the split balances
  rows = std::min(rows, std::max<int64_t>(16, m / (4 * threads)));
  return rows;
}

// The pixels split into chunks of `rows`; chunk i belongs to slot i / per_slot, and each slot
// runs on one thread. Calls body(slot, p0, p1, cols) for every chunk, where cols is the
// [p1 - p0, T * C] active-tap im2col of src over pixels [p0, p1).
struct Chunking {
  int64_t rows, chunks, slots, per_slot;
};

Chunking make_chunking(int64_t m, int64_t row_bytes, int64_t max_slots) {
  Chunking ch;
  ch.rows = chunk_rows(m, row_bytes);
  ch.chunks = (m + ch.rows - 1) / ch.rows;
  ch.slots = std::max<int64_t>(1, std::min(max_slots, ch.chunks));
  ch.per_slot = (ch.chunks + ch.slots - 1) / ch.slots;
  ch.slots = (ch.chunks + ch.per_slot - 1) / ch.per_slot;
  return ch;
}

template <typename Body>
void for_each_im2col_chunk(const at::Tensor& src, const TapOffsets& off, const Chunking& ch,
                           const Body& body) {
  const Geometry g{src.size(0), src.size(1), src.size(2), src.size(3)};
  const int64_t taps = static_cast<int64_t>(off.dy.size());
  const int64_t m = g.pixels(), elem = src.element_size();
  const char* in = static_cast<const char*>(src.const_data_ptr());
  const std::vector<TapRun> runs = tap_runs(off);
  at::parallel_for(0, ch.slots, 1, [&](int64_t s0, int64_t s1) {
    // Worker threads do not inherit the dispatcher's thread-local state: no autograd here.
    const c10::AutoGradMode no_grad(false);
    at::Tensor buf = at::empty({ch.rows, taps * g.c}, src.options());
    for (int64_t slot = s0; slot < s1; ++slot) {
      const int64_t last = std::min(ch.chunks, (slot + 1) * ch.per_slot);
      for (int64_t chunk = slot * ch.per_slot; chunk < last; ++chunk) {
        const int64_t p0 = chunk * ch.rows, p1 = std::min(m, p0 + ch.rows);
        at::Tensor cols = buf.narrow(0, 0, p1 - p0);
        im2col_rows(in, static_cast<char*>(cols.mutable_data_ptr()), g, runs, taps, elem, p0, p1);
        body(slot, p0, p1, cols);
      }
    }
  });
}

// out [M, C_out] = im2col(src) @ wp (+ bias).
void conv_gemm(const at::Tensor& src, const TapOffsets& off, const at::Tensor& wp,
               const std::optional<at::Tensor>& bias, at::Tensor& out2d) {
  const int64_t row_bytes = static_cast<int64_t>(off.dy.size()) * src.size(3) * src.element_size();
  const Chunking ch = make_chunking(out2d.size(0), row_bytes, out2d.size(0));
  for_each_im2col_chunk(src, off, ch, [&](int64_t, int64_t p0, int64_t p1, const at::Tensor& cols) {
    at::Tensor dst = out2d.narrow(0, p0, p1 - p0);
    if (bias.has_value()) {
      at::addmm_out(dst, *bias, cols, wp);
    } else {
      at::mm_out(dst, cols, wp);
    }
  });
}

// The whole active-tap im2col [M, T * C] of src (NHWC, contiguous), for the single-GEMM
// path; a lone center tap (1x1 kernels) needs no gather at all.
at::Tensor im2col_cpu(const at::Tensor& src, const TapOffsets& off) {
  const Geometry g{src.size(0), src.size(1), src.size(2), src.size(3)};
  const int64_t taps = static_cast<int64_t>(off.dy.size()), m = g.pixels();
  if (taps == 1 && off.dy[0] == 0 && off.dx[0] == 0) return src.view({m, g.c});
  at::Tensor cols = at::empty({m, taps * g.c}, src.options());
  const int64_t elem = src.element_size(), row_bytes = taps * g.c * elem;
  const char* in = static_cast<const char*>(src.const_data_ptr());
  char* out = static_cast<char*>(cols.mutable_data_ptr());
  const std::vector<TapRun> runs = tap_runs(off);
  at::parallel_for(0, m, 64, [&](int64_t p0, int64_t p1) {
    im2col_rows(in, out + p0 * row_bytes, g, runs, taps, elem, p0, p1);
  });
  return cols;
}

enum class Path { kRects, kChunks, kSingle };

bool cpu_has_avx512() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  return avx512;
#else
  return false;
#endif
}

// kRects (oneDNN convolutions over the kept-tap rectangles) for float32 and bfloat16, the
// types oneDNN runs: on the 2-core EPYC these were written on, oneDNN's AVX-512 kernels
// reached about 450 GFLOP/s on channels-last 1x1 convolutions where at::mm (MKL) stayed
// near 200, so the rectangles beat the im2col + GEMM paths at every digits-sized layer
// (8x8, B=64: 3x3 mask B 32 -> 32, vertical and horizontal 3x3 stacks 64 -> 128, 1x1
// 64 <-> 32). Other dtypes take the GEMM paths: kSingle (whole-tensor im2col, one
// multithreaded GEMM per pass, the CUDA formulation) when only the center tap is kept
// (1x1 kernels), since its im2col is the input itself; kChunks otherwise.
// GM_MASKED_CONV_CPU_PATH=rects|chunks|single overrides the choice.
Path cpu_path(at::ScalarType dtype, int64_t k, const std::vector<int64_t>& taps) {
  if (const char* env = std::getenv("GM_MASKED_CONV_CPU_PATH")) {
    const std::string path(env);
    if (path == "rects") return Path::kRects;
    if (path == "chunks") return Path::kChunks;
    if (path == "single") return Path::kSingle;
  }
  if (taps.size() == 1 && taps[0] == (k / 2) * k + k / 2) {
    return dtype == at::kFloat || dtype == at::kBFloat16 ? Path::kRects : Path::kSingle;
  }
  // Without AVX-512 (oneDNN's fast kernels above) the chunked GEMMs win at 3x3: on this
  // project's later 2-core AVX2 EPYC, float32, forward + backward, 1.2-1.3x the rectangles
  // at [64, 32, 8, 8] and [16, 64, 28, 28] with 1 and 2 threads; at 7x7 the rectangles
  // stay (equal at 1 thread, 1.17x faster at 2).
  if (dtype == at::kFloat && k <= 3 && !cpu_has_avx512()) return Path::kChunks;
  if (dtype == at::kFloat || dtype == at::kBFloat16) return Path::kRects;
  return Path::kChunks;
}

}  // namespace

bool masked_conv2d_reads_box_cpu(const at::Tensor& weight, const std::vector<int64_t>& taps) {
  return cpu_path(weight.scalar_type(), weight.size(2), taps) == Path::kRects;
}

at::Tensor masked_conv2d_forward_cpu(const at::Tensor& x, const at::Tensor& weight,
                                     const std::optional<at::Tensor>& bias,
                                     const std::vector<int64_t>& taps,
                                     const std::optional<at::Tensor>& center_mask) {
  check_masked_conv2d_inputs(x, weight, bias, taps, center_mask);
  const NoAutocast no_autocast;
  check_device_type(x, at::kCPU, "x");
  const int64_t k = weight.size(2);
  const Path path = cpu_path(x.scalar_type(), k, taps);
  if (x.numel() > 0 && path == Path::kRects) {
    return masked_conv2d_forward_rects(x, weight, bias, taps, center_mask);
  }
  if (path == Path::kSingle) {
    return masked_conv2d_forward_gemm(x, weight, bias, taps, center_mask, im2col_cpu);
  }
  const int64_t n = x.size(0), h = x.size(2), w = x.size(3), c_out = weight.size(0);
  at::Tensor out = at::empty({n, h, w, c_out}, x.options());
  if (out.numel() > 0) {
    at::Tensor out2d = out.view({n * h * w, c_out});
    conv_gemm(to_nhwc(x), tap_offsets(taps, k, false), pack_weight(weight, taps, center_mask),
              bias, out2d);
  }
  return out.permute({0, 3, 1, 2});
}

std::tuple<at::Tensor, at::Tensor> masked_conv2d_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight,
    const std::vector<int64_t>& taps, const std::optional<at::Tensor>& center_mask,
    bool need_input, bool need_weight) {
  check_masked_conv2d_inputs(x, weight, std::nullopt, taps, center_mask);
  const NoAutocast no_autocast;
  check_masked_conv2d_grad(grad_out, x, weight);
  check_device_type(x, at::kCPU, "x");
  const Path path = cpu_path(x.scalar_type(), weight.size(2), taps);
  if (x.numel() > 0 && path == Path::kRects) {
    return masked_conv2d_backward_rects(grad_out, x, weight, taps, center_mask, need_input,
                                        need_weight);
  }
  const int64_t n = x.size(0), c_in = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t c_out = weight.size(0), k = weight.size(2), m = n * h * w;
  const int64_t t = static_cast<int64_t>(taps.size());
  at::Tensor grad_x = x.new_empty({0});
  at::Tensor grad_w = weight.new_empty({0});
  if (path == Path::kSingle) {
    return masked_conv2d_backward_gemm(grad_out, x, weight, taps, center_mask, need_input,
                                       need_weight, im2col_cpu);
  }
  const at::Tensor g = to_nhwc(grad_out);
  if (need_input) {
    at::Tensor gx = at::empty({n, h, w, c_in}, x.options());
    if (gx.numel() > 0) {
      at::Tensor gx2d = gx.view({m, c_in});
      conv_gemm(g, tap_offsets(taps, k, true), pack_weight_transposed(weight, taps, center_mask),
                std::nullopt, gx2d);
    }
    grad_x = gx.permute({0, 3, 1, 2});
  }
  if (need_weight) {
    if (m == 0 || t == 0) {
      grad_w = at::zeros_like(weight, at::MemoryFormat::Contiguous);
    } else {
      // One [T * C_in, C_out] accumulator per chunk group, summed in a fixed order so the
      // result does not depend on the thread count.
      const at::Tensor g2d = g.view({m, c_out});
      const at::Tensor xs = to_nhwc(x);
      const at::ScalarType acc_type =
          x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
      const Chunking ch = make_chunking(m, t * c_in * x.element_size(),
                                        std::min<int64_t>(at::get_num_threads(), 64));
      at::Tensor partial = at::zeros({ch.slots, t * c_in, c_out}, x.options().dtype(acc_type));
      for_each_im2col_chunk(xs, tap_offsets(taps, k, false), ch,
                            [&](int64_t slot, int64_t p0, int64_t p1, const at::Tensor& cols) {
        at::Tensor acc = partial.select(0, slot);
        const at::Tensor gc = g2d.narrow(0, p0, p1 - p0);
        if (acc_type == x.scalar_type()) {
          acc.addmm_(cols.t(), gc);
        } else {
          acc.add_(at::mm(cols.t(), gc));  // half inputs: product in the input type, sum in float
        }
      });
      grad_w = unpack_weight_grad(partial.sum(0).to(x.scalar_type()), weight, taps, center_mask);
    }
  }
  return {grad_x, grad_w};
}

}  // namespace genmodels
