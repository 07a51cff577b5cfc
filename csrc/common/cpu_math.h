#pragma once
// Branch-free float log, exp, sin/cos, tanh and sigmoid (Cephes polynomials) that GCC vectorizes
// inside the CPU kernels' loops; libm calls would keep those loops scalar. Accurate to a
// few ulp on the ranges used, which is within the tolerance the backends are tested to.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace genmodels {
namespace cpu_math {

inline float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline uint32_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// log(x) for positive normal x (the Box-Muller radius uniform is always one).
inline float log_positive(float x) {
  const uint32_t ix = float_to_bits(x);
  int e = static_cast<int>((ix >> 23) & 0xff) - 126;
  float m = bits_to_float((ix & 0x007fffffu) | 0x3f000000u);  // [0.5, 1)
  const bool small = m < 0.70710678118654752f;
  e -= small ? 1 : 0;
  m = small ? (m + m - 1.0f) : (m - 1.0f);
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  const float fe = static_cast<float>(e);
  y += -2.12194440e-4f * fe;
  y += -0.5f * z;
  return m + y + 0.693359375f * fe;
}

// exp(x) for any float: +inf above the float range, 0 below it, NaN for NaN.
inline float exp_any(float x) {
  const float kMax = 88.72283905206835f;
  const float kMin = -103.97208f;
  const float xc = x > kMax ? kMax : (x < kMin ? kMin : x);
  const float n = std::floor(xc * 1.44269504088896341f + 0.5f);
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  const float z = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * z + r + 1.0f;
  // 2^n in two factors so that n down to -150 (subnormal results) stays exact.
  const int ni = static_cast<int>(n);
  const int n1 = ni / 2;
  const int n2 = ni - n1;
  const float s1 = bits_to_float(static_cast<uint32_t>(n1 + 127) << 23);
  const float s2 = bits_to_float(static_cast<uint32_t>(n2 + 127) << 23);
  float result = p * s1 * s2;
  result = x > kMax ? std::numeric_limits<float>::infinity() : result;
  result = x < kMin ? 0.0f : result;
  return x != x ? x : result;
}

// sin and cos of 2*pi*t for t in [0, 1) turns: reduce to an eighth of a turn, then
// minimax polynomials on [-pi/4, pi/4].
inline void sincos_turns(float t, float& s, float& c) {
  const float q = std::floor(t * 4.0f + 0.5f);  // 0..4
  const float a = (t - q * 0.25f) * 6.28318530717958648f;
  const float a2 = a * a;
  float sp = -1.9515295891e-4f;
  sp = sp * a2 + 8.3321608736e-3f;
  sp = sp * a2 - 1.6666654611e-1f;
  const float sa = a + a * a2 * sp;
  float cp = 2.443315711809948e-5f;
  cp = cp * a2 - 1.388731625493765e-3f;
  cp = cp * a2 + 4.166664568298827e-2f;
  const float ca = 1.0f - 0.5f * a2 + a2 * a2 * cp;
  const int quadrant = static_cast<int>(q) & 3;
  // Rotate by quadrant * 90 degrees.
  const bool swap = quadrant & 1;
  const float s0 = swap ? ca : sa;
  const float c0 = swap ? sa : ca;
  s = (quadrant >= 2) ? -s0 : s0;
  c = (((quadrant + 1) & 2) != 0) ? -c0 : c0;  // quadrants 1 and 2
}

// tanh(x) for any float (Cephes tanhf): a polynomial below |x| = 0.625, where
// 1 - 2 / (exp(2x) + 1) would cancel, that expression above it.
// One comparison on |x| (not a short-circuit && of two) lets GCC if-convert the loops
// that call it.
inline float tanh_any(float x) {
  const float z = x * x;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  const float small = x + x * z * p;
  const float large = 1.0f - 2.0f / (exp_any(2.0f * x) + 1.0f);
  return std::fabs(x) < 0.625f ? small : large;
}

// 1 / (1 + exp(-x)) for any float.
inline float sigmoid_any(float x) { return 1.0f / (1.0f + exp_any(-x)); }

}  // namespace cpu_math
}  // namespace genmodels
