// Host conversions, bit-exact with the GPU instructions (SPEC §2). Header-only so that the
// CPU reference, the tests and user code share one definition.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace mlakv::num {

/// float -> bf16 bits, round to nearest even; NaN stays NaN (quiet).
inline uint16_t f32_to_bf16(float x) {
  uint32_t u = std::bit_cast<uint32_t>(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline float bf16_to_f32(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

/// Rounds a float to the nearest bf16 value and returns it as a float.
inline float round_bf16(float x) { return bf16_to_f32(f32_to_bf16(x)); }

/// e4m3fn code -> float. 0x7f and 0xff are NaN; there are no infinities.
inline float e4m3_to_f32(uint8_t c) {
  const uint32_t sign = c >> 7, exp = (c >> 3) & 0xf, man = c & 0x7;
  float v;
  if (exp == 0xf && man == 0x7) return std::numeric_limits<float>::quiet_NaN();
  if (exp == 0) v = std::ldexp(static_cast<float>(man), -9);  // subnormal: man/8 * 2^-6
  else v = std::ldexp(1.0f + static_cast<float>(man) / 8.0f, static_cast<int>(exp) - 7);
  return sign ? -v : v;
}

/// float -> e4m3fn code: round to nearest even, finite values saturate to ±448, NaN -> NaN,
/// ±inf -> ±448 (the semantics of __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3)).
inline uint8_t f32_to_e4m3(float x) {
  const uint32_t u = std::bit_cast<uint32_t>(x);
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint8_t>(sign | 0x7f);
  const float ax = std::bit_cast<float>(a);
  if (ax >= 464.0f) return static_cast<uint8_t>(sign | 0x7e);  // 464 = midpoint 448..480 rounds to even -> 480 (out of range) -> saturate
  const int e = static_cast<int>(a >> 23) - 127;               // unbiased exponent of |x|
  // Quantum of the destination binade: 2^(e-3) for normals (e >= -6), 2^-9 for subnormals.
  const int q = e < -6 ? -9 : e - 3;
  const float scaled = std::ldexp(ax, -q);  // exact: a power-of-two scale
  const float r = std::nearbyint(scaled);   // default rounding mode: to nearest even
  const int m = static_cast<int>(r);        // value = m * 2^q
  if (m == 0) return sign;
  // Re-encode m * 2^q.
  int exp_field, man_field;
  if (q == -9 && m < 8) {
    exp_field = 0;
    man_field = m;
  } else {
    // m in [8, 16] for normals (16 when rounding carried into the next binade).
    int qq = q, mm = m;
    if (mm == 16) { mm = 8; qq += 1; }
    exp_field = qq + 3 + 7;
    man_field = mm - 8;
  }
  if (exp_field > 15 || (exp_field == 15 && man_field == 7)) return static_cast<uint8_t>(sign | 0x7e);
  return static_cast<uint8_t>(sign | (exp_field << 3) | man_field);
}

/// UE8M0 exponent for a 64-group with max |x| = amax (SPEC §2): ceil(log2(max(amax,1e-4)/448)).
inline int ue8m0_exponent(float amax) {
  const float x = std::fmax(amax, 1e-4f) / 448.0f;
  int k;
  const float m = std::frexp(x, &k);  // x = m * 2^k, m in [0.5, 1): exact ceil(log2 x)
  return m == 0.5f ? k - 1 : k;
}

inline uint8_t ue8m0_byte(int e) {
  const int b = e + 127;
  return static_cast<uint8_t>(b < 0 ? 0 : (b > 255 ? 255 : b));
}

inline float ue8m0_scale(uint8_t b) { return std::ldexp(1.0f, static_cast<int>(b) - 127); }

}  // namespace mlakv::num
