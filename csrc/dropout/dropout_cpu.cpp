// CPU kernel of dropout: one pass over x in memory order that draws the mask in the loop.
//
// Flat chunks of kChunk elements are the parallel tasks (common/cpu_chunks.h with one row);
// each tile of kTile elements first computes its Philox words, four per counter group,
// then multiplies x by 0 or 1 / (1 - p). The Philox rounds are most of the time. GCC
// vectorizes them only with 64-bit lanes (it widens the 32x32 -> 64 products), so on
// AVX-512 they are written with intrinsics on 16 32-bit lanes, which is twice as fast
// at PixelCNN sizes; other CPUs run the plain loop, vectorized per GM_CPU_CLONES.
#include <ATen/Dispatch.h>

#include <algorithm>
#include <type_traits>

#include "common/cpu_alloc.h"
#include "common/cpu_chunks.h"
#include "common/cpu_tiles.h"
#include "common/philox.h"
#include "dropout/dropout.h"
#include "dropout/dropout_checks.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define GM_DROPOUT_AVX512 1
#endif

namespace genmodels {
namespace {

// A multiple of 64, so that every tile starts on a counter group that is a multiple of 16.
constexpr int64_t kTile = 512;
constexpr int64_t kGroups = kTile / 4;
constexpr int64_t kChunk = 16384;
static_assert(kTile % 64 == 0 && kChunk % kTile == 0, "tiles must start on 16-group blocks");

// The words of counter groups [g0, g0 + groups), one array per word (structure of arrays).
struct TileWords {
  alignas(64) uint32_t w0[kGroups], w1[kGroups], w2[kGroups], w3[kGroups];
};

GM_CPU_CLONES void philox_words_portable(PhiloxKey key, uint64_t g0, int64_t groups,
                                         TileWords& t) {
  for (int64_t j = 0; j < groups; ++j) {
    const Philox4 r = philox_group(key, g0 + static_cast<uint64_t>(j));
    t.w0[j] = r.x0;
    t.w1[j] = r.x1;
    t.w2[j] = r.x2;
    t.w3[j] = r.x3;
  }
}

#ifdef GM_DROPOUT_AVX512
// GCC 12's own avx512fintrin.h trips -Wmaybe-uninitialized (its _mm512_undefined_epi32).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// High halves of the 16 lane-wise 32x32-bit products: even lanes and odd lanes multiply
// separately into 64-bit products, whose high words are blended back together.
__attribute__((target("avx512f"))) inline __m512i mulhi_epu32(__m512i a, __m512i b) {
  const __m512i even = _mm512_srli_epi64(_mm512_mul_epu32(a, b), 32);
  const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), _mm512_srli_epi64(b, 32));
  return _mm512_mask_blend_epi32(0xAAAA, even, odd);
}

// philox_group on 16 consecutive groups at a time. g0 % 16 == 0, so the 16 counters of a
// block share their high word (2^32 is a multiple of 16); a partial last block computes
// all 16 groups, which TileWords has room for.
__attribute__((target("avx512f"))) void philox_words_avx512(PhiloxKey key, uint64_t g0,
                                                              int64_t groups, TileWords& t) {
  const __m512i m0 = _mm512_set1_epi32(static_cast<int>(kPhiloxM0));
  const __m512i m1 = _mm512_set1_epi32(static_cast<int>(kPhiloxM1));
  const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (int64_t j = 0; j < groups; j += 16) {
    const uint64_t g = g0 + static_cast<uint64_t>(j);
    __m512i c0 = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(g)), lanes);
    __m512i c1 = _mm512_set1_epi32(static_cast<int>(g >> 32));
    __m512i c2 = _mm512_set1_epi32(static_cast<int>(key.c2));
    __m512i c3 = _mm512_set1_epi32(static_cast<int>(key.c3));
    uint32_t k0 = key.k0, k1 = key.k1;
    GM_UNROLL
    for (int round = 0; round < 10; ++round) {
      const __m512i hi0 = mulhi_epu32(m0, c0), lo0 = _mm512_mullo_epi32(m0, c0);
      const __m512i hi1 = mulhi_epu32(m1, c2), lo1 = _mm512_mullo_epi32(m1, c2);
      c0 = _mm512_xor_si512(_mm512_xor_si512(hi1, c1), _mm512_set1_epi32(static_cast<int>(k0)));
      c1 = lo1;
      c2 = _mm512_xor_si512(_mm512_xor_si512(hi0, c3), _mm512_set1_epi32(static_cast<int>(k1)));
      c3 = lo0;
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    _mm512_store_si512(t.w0 + j, c0);
    _mm512_store_si512(t.w1 + j, c1);
    _mm512_store_si512(t.w2 + j, c2);
    _mm512_store_si512(t.w3 + j, c3);
  }
}
#pragma GCC diagnostic pop
#endif

// Structure of arrays to element order: word k of group j belongs to element 4 j + k.
GM_CPU_CLONES void interleave_words(const TileWords& t, int64_t groups, uint32_t* words) {
  for (int64_t j = 0; j < groups; ++j) {
    words[4 * j + 0] = t.w0[j];
    words[4 * j + 1] = t.w1[j];
    words[4 * j + 2] = t.w2[j];
    words[4 * j + 3] = t.w3[j];
  }
}

// Philox words of the elements [first, first + count) in element order; first % kTile == 0,
// count <= kTile.
void philox_words(PhiloxKey key, uint64_t first, int64_t count, uint32_t* words) {
  const uint64_t g0 = first >> 2;
  const int64_t groups = (count + 3) >> 2;
  TileWords t;
#ifdef GM_DROPOUT_AVX512
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  if (avx512) {
    philox_words_avx512(key, g0, groups, t);
  } else {
    philox_words_portable(key, g0, groups, t);
  }
#else
  philox_words_portable(key, g0, groups, t);
#endif
  interleave_words(t, groups, words);
}

// out = x * (dropped ? 0 : scale): a product, not a select, so that NaN and inf inputs
// give what x * keep / (1 - p) gives.
GM_CPU_CLONES void mask_tile(const float* x, const uint32_t* words, int64_t count,
                             uint32_t threshold, float scale, float* out) {
  for (int64_t i = 0; i < count; ++i)
    out[i] = x[i] * (dropout_drops(words[i], threshold) ? 0.0f : scale);
}

GM_CPU_CLONES void mask_tile(const double* x, const uint32_t* words, int64_t count,
                             uint32_t threshold, double scale, double* out) {
  for (int64_t i = 0; i < count; ++i)
    out[i] = x[i] * (dropout_drops(words[i], threshold) ? 0.0 : scale);
}

template <typename scalar_t>
void dropout_kernel(const scalar_t* x, scalar_t* out, int64_t n, PhiloxKey key,
                    uint32_t threshold, double scale) {
  // float16 and bfloat16 are computed in float, float64 in double.
  using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
  const acc_t scale_acc = static_cast<acc_t>(scale);
  for_each_row_chunk(make_row_chunks(1, n, kChunk), [&](int64_t, int64_t c0, int64_t c1,
                                                        int64_t) {
    uint32_t words[kTile];
    // Separate in and out tiles: in place, the loop's alias check would pick its scalar form.
    float in[kTile], res[kTile];
    for (int64_t t0 = c0; t0 < c1; t0 += kTile) {
      const int64_t count = std::min(kTile, c1 - t0);
      philox_words(key, static_cast<uint64_t>(t0), count, words);
      if constexpr (std::is_same_v<scalar_t, acc_t>) {
        mask_tile(x + t0, words, count, threshold, scale_acc, out + t0);
      } else {
        load_tile(x + t0, count, in);
        mask_tile(in, words, count, threshold, scale_acc, res);
        store_tile(res, count, out + t0);
      }
    }
  });
}

}  // namespace

at::Tensor dropout_forward_cpu(const at::Tensor& x_in, double p, int64_t seed, int64_t offset) {
  check_dropout_inputs(x_in, p);
  check_device_type(x_in, at::kCPU, "x");
  const at::Tensor x = dropout_memory_order(x_in);
  at::Tensor out = empty_output_like(x);
  if (x.numel() == 0) return out;
  const PhiloxKey key = make_philox_key(static_cast<uint64_t>(seed), static_cast<uint64_t>(offset));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dropout_forward_cpu",
                                  [&] {
    dropout_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
                             x.numel(), key, dropout_threshold(p), dropout_scale(p));
  });
  return out;
}

}  // namespace genmodels
