#pragma once
// The one noise definition of genmodels, torch-free so the CPU kernels and the CUDA
// kernels share it. genkernels/_philox.py and genmodels/ops/_philox.py implement the
// same stream, so every backend draws the same normals and dropout masks for one
// (seed, offset).
//
// Element i of a noise tensor (row-major, all samples) or of a dropout mask (memory order)
// takes word i % 4 of
//   Philox4x32-10(key = (seed_lo, seed_hi), counter = (g_lo, g_hi, offset_lo, offset_hi)),
// with g = i / 4. Noise turns the four words into four normals by two Box-Muller
// transforms; dropout drops element i iff (word >> 8) < threshold = round(p * 2^24).
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define GM_HOST_DEVICE __host__ __device__ __forceinline__
#define GM_UNROLL _Pragma("unroll")
#else
#define GM_HOST_DEVICE inline
// Fully unrolled rounds let GCC vectorize loops over many counters.
#define GM_UNROLL _Pragma("GCC unroll 10")
#endif

namespace genmodels {

constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;
// 2^-23 and 2^-24: uniforms are built from the top 23 / 24 bits so the conversion to
// float is exact and identical on every backend.
constexpr float kTwoPow23Inv = 1.1920928955078125e-07f;
constexpr float kTwoPow24Inv = 5.9604644775390625e-08f;

struct PhiloxKey {
  uint32_t k0, k1;    // seed
  uint32_t c2, c3;    // offset: the high half of the counter
};

GM_HOST_DEVICE PhiloxKey make_philox_key(uint64_t seed, uint64_t offset) {
  return {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
          static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32)};
}

struct Philox4 {
  uint32_t x0, x1, x2, x3;
};

GM_HOST_DEVICE Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                     uint32_t k0, uint32_t k1) {
GM_UNROLL
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * c0;
    const uint64_t p1 = static_cast<uint64_t>(kPhiloxM1) * c2;
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  return {c0, c1, c2, c3};
}

// Philox output for counter group g of a stream.
GM_HOST_DEVICE Philox4 philox_group(const PhiloxKey& key, uint64_t g) {
  return philox4x32_10(static_cast<uint32_t>(g), static_cast<uint32_t>(g >> 32), key.c2, key.c3,
                       key.k0, key.k1);
}

// Box-Muller inputs: radius uniform in (0, 1) (never 0, so log is finite) and angle
// uniform in [0, 1) turns.
GM_HOST_DEVICE float uniform_open(uint32_t bits) {
  return (static_cast<float>(bits >> 9) + 0.5f) * kTwoPow23Inv;
}
GM_HOST_DEVICE float uniform_turns(uint32_t bits) {
  return static_cast<float>(bits >> 8) * kTwoPow24Inv;
}

// Normal number of stream element idx: the scalar form of the spec, used by the CUDA
// kernels (the CPU kernels generate whole tiles at once instead).
GM_HOST_DEVICE float philox_normal(const PhiloxKey& key, uint64_t idx) {
  const Philox4 r = philox_group(key, idx >> 2);
  const uint32_t lane = static_cast<uint32_t>(idx & 3);
  const uint32_t radius_bits = lane < 2 ? r.x0 : r.x2;
  const uint32_t angle_bits = lane < 2 ? r.x1 : r.x3;
  const float radius = sqrtf(-2.0f * logf(uniform_open(radius_bits)));
  const float angle = 6.28318530717958648f * uniform_turns(angle_bits);
  return radius * ((lane & 1) ? sinf(angle) : cosf(angle));
}

// Dropout's threshold for p in [0, 1], computed once on the host: round(p * 2^24) with
// ties to even (nearbyint in the default rounding mode, as Python's round), so that
// P(drop) = p to within 2^-25.
inline uint32_t dropout_threshold(double p) {
  return static_cast<uint32_t>(std::nearbyint(p * 16777216.0));
}

// Dropout's test on element i's word: an integer comparison, so that every backend drops
// the same elements.
GM_HOST_DEVICE bool dropout_drops(uint32_t word, uint32_t threshold) {
  return (word >> 8) < threshold;
}

}  // namespace genmodels
