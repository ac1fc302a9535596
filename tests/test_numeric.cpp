// Host conversions against the GPU's own conversion instructions (vectors/conversions) and the
// UE8M0 edge cases of SPEC §2.
#include <cfloat>
#include <cmath>

#include "cuda/e4m3_alu.hpp"
#include "test_util.hpp"

namespace mlakv::test {
namespace {

bool same_value(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return a == b && std::signbit(a) == std::signbit(b);
}

TEST(Numeric, E4m3DecodeMatchesGpuForAll256Codes) {
  const auto ref = read_raw<float>("vectors/conversions/e4m3_decode.f32");
  ASSERT_EQ(ref.size(), 256u);
  for (int c = 0; c < 256; ++c)
    EXPECT_TRUE(same_value(num::e4m3_to_f32(static_cast<uint8_t>(c)), ref[c]))
        << "code 0x" << std::hex << c << ": " << num::e4m3_to_f32(static_cast<uint8_t>(c)) << " vs " << ref[c];
}

// fp16 bits -> value, exactly (the halves e4m3_alu's fp16 placement gives).
double f16_value(uint32_t h) {
  const int e = (h >> 10) & 31, m = h & 1023;
  const double v = e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, e - 25);
  return h & 0x8000u ? -v : v;
}

TEST(Numeric, E4m3IntegerConversionsGiveExactScaledValuesFromEveryBytePosition) {
  namespace alu = cuda::e4m3_alu;
  // Neighbouring bytes hold codes whose bits would leak into a wrong field (all ones, signs).
  const uint32_t fill[8] = {0xff, 0x80, 0x7f, 0xee, 0x01, 0xfe, 0x7e, 0x81};
  for (int c = 0; c < 256; ++c) {
    const bool is_nan = (c & 0x7f) == 0x7f;
    const double want = num::e4m3_to_f32(static_cast<uint8_t>(c));
    for (uint32_t p = 0; p < 8; ++p) {
      const uint32_t q = (p + 3) & 7;
      uint64_t x = 0;
      for (int o = 0; o < 8; ++o) x |= static_cast<uint64_t>(o == static_cast<int>(p) ? c : fill[o]) << (8 * o);
      const uint32_t a = static_cast<uint32_t>(x), b = static_cast<uint32_t>(x >> 32);
      const uint32_t h = alu::e4m3x2_placed<7>(a, b, p, q);
      const double other = num::e4m3_to_f32(static_cast<uint8_t>(fill[q]));
      if (!std::isnan(other)) EXPECT_EQ(f16_value(h >> 16) * alu::kUnscale, other) << "neighbour of 0x" << std::hex << c;
      if (is_nan) continue;
      EXPECT_EQ(f16_value(h & 0xffffu) * alu::kUnscale, want) << "code 0x" << std::hex << c << " byte " << p;
      EXPECT_EQ((h & 0x8000u) != 0, std::signbit(want)) << "code 0x" << std::hex << c;  // -0 keeps its sign
    }
    // The four-byte forms: byte k of w in half k % 2 of lo (k < 2) or hi; fp16 and bf16.
    for (int k = 0; k < 4; ++k) {
      const uint32_t w = (0x01fe7f80u & ~(0xffu << (8 * k))) | static_cast<uint32_t>(c) << (8 * k);
      uint32_t lo = 0, hi = 0, blo = 0, bhi = 0;
      alu::e4m3x4_to_f16x2x2_scaled(w, lo, hi);
      alu::e4m3x4_to_bf16x2x2_scaled(w, blo, bhi);
      if (is_nan) continue;
      EXPECT_EQ(f16_value(((k < 2 ? lo : hi) >> (16 * (k & 1))) & 0xffffu) * alu::kUnscale, want);
      const uint32_t b16 = ((k < 2 ? blo : bhi) >> (16 * (k & 1))) & 0xffffu;
      EXPECT_EQ(static_cast<double>(num::bf16_to_f32(static_cast<uint16_t>(b16))) * alu::kUnscaleBf16, want) << "bf16, code 0x" << std::hex << c;
      EXPECT_EQ((b16 & 0x8000u) != 0, std::signbit(want)) << "bf16, code 0x" << std::hex << c;
    }
  }
}

TEST(Numeric, E4m3EncodeMatchesGpuOnEveryVectorInput) {
  const auto in = read_raw<float>("vectors/conversions/inputs.f32");
  const auto ref = read_raw<uint8_t>("vectors/conversions/e4m3_codes.u8");
  ASSERT_EQ(in.size(), ref.size());
  ASSERT_GT(in.size(), 250000u);
  int mismatches = 0;
  for (std::size_t i = 0; i < in.size(); ++i) {
    const uint8_t got = num::f32_to_e4m3(in[i]);
    const bool ok = std::isnan(in[i]) ? (got & 0x7f) == 0x7f : got == ref[i];
    if (!ok && ++mismatches <= 10)
      ADD_FAILURE() << "input " << std::hexfloat << in[i] << ": got 0x" << std::hex << int(got) << ", GPU 0x"
                    << int(ref[i]);
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(Numeric, Bf16EncodeMatchesGpuOnEveryVectorInput) {
  const auto in = read_raw<float>("vectors/conversions/inputs.f32");
  const auto ref = read_raw<uint16_t>("vectors/conversions/bf16_bits.u16");
  ASSERT_EQ(in.size(), ref.size());
  int mismatches = 0;
  for (std::size_t i = 0; i < in.size(); ++i) {
    const uint16_t got = num::f32_to_bf16(in[i]);
    const bool ok = std::isnan(in[i]) ? std::isnan(num::bf16_to_f32(got)) : got == ref[i];
    if (!ok && ++mismatches <= 10)
      ADD_FAILURE() << "input " << std::hexfloat << in[i] << ": got 0x" << std::hex << got << ", GPU 0x" << ref[i];
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(Numeric, E4m3RoundTripsEveryFiniteCode) {
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7f) == 0x7f) continue;
    const float v = num::e4m3_to_f32(static_cast<uint8_t>(c));
    // -0 encodes as 0x80, +0 as 0x00: both survive.
    EXPECT_EQ(num::f32_to_e4m3(v), c) << "code 0x" << std::hex << c;
  }
}

TEST(Numeric, E4m3SaturatesFiniteAndInfiniteToMax448) {
  EXPECT_EQ(num::f32_to_e4m3(448.0f), 0x7e);
  EXPECT_EQ(num::f32_to_e4m3(463.99f), 0x7e);
  EXPECT_EQ(num::f32_to_e4m3(464.0f), 0x7e);
  EXPECT_EQ(num::f32_to_e4m3(1e30f), 0x7e);
  EXPECT_EQ(num::f32_to_e4m3(INFINITY), 0x7e);
  EXPECT_EQ(num::f32_to_e4m3(-INFINITY), 0xfe);
  EXPECT_EQ(num::f32_to_e4m3(-FLT_MAX), 0xfe);
  EXPECT_EQ(num::f32_to_e4m3(NAN) & 0x7f, 0x7f);
}

TEST(Numeric, E4m3RoundsTiesToEvenIncludingSubnormals) {
  // 1 + 1/16 lies midway between 1 (even mantissa 0) and 1.125: rounds down.
  EXPECT_EQ(num::f32_to_e4m3(1.0625f), num::f32_to_e4m3(1.0f));
  // 1.1875 lies midway between 1.125 (odd) and 1.25 (even): rounds up.
  EXPECT_EQ(num::f32_to_e4m3(1.1875f), num::f32_to_e4m3(1.25f));
  // Smallest subnormal 2^-9: half of it rounds to zero (even), just above half rounds up.
  EXPECT_EQ(num::f32_to_e4m3(std::ldexp(1.0f, -10)), 0x00);
  EXPECT_EQ(num::f32_to_e4m3(std::nextafter(std::ldexp(1.0f, -10), 1.0f)), 0x01);
  EXPECT_EQ(num::f32_to_e4m3(-std::ldexp(3.0f, -10)), 0x82);  // 1.5 quanta -> 2 (even)
}

TEST(Numeric, Bf16RoundsToNearestEvenAndKeepsNaN) {
  EXPECT_EQ(num::f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(num::f32_to_bf16(std::bit_cast<float>(0x3f808000u)), 0x3f80);  // tie, even below
  EXPECT_EQ(num::f32_to_bf16(std::bit_cast<float>(0x3f818000u)), 0x3f82);  // tie, even above
  EXPECT_EQ(num::f32_to_bf16(std::bit_cast<float>(0x3f808001u)), 0x3f81);
  EXPECT_EQ(num::f32_to_bf16(std::bit_cast<float>(0x7f7fffffu)), 0x7f80);  // FLT_MAX overflows to inf
  EXPECT_TRUE(std::isnan(num::bf16_to_f32(num::f32_to_bf16(std::bit_cast<float>(0x7f800001u)))));
}

TEST(Numeric, Ue8m0ExponentIsExactCeilLog2AtPowerOfTwoBoundaries) {
  // amax / 448 exactly a power of two: no rounding up.
  EXPECT_EQ(num::ue8m0_exponent(448.0f), 0);
  EXPECT_EQ(num::ue8m0_exponent(896.0f), 1);
  EXPECT_EQ(num::ue8m0_exponent(224.0f), -1);
  // One ulp above a power of two rounds up to the next exponent.
  EXPECT_EQ(num::ue8m0_exponent(std::nextafter(448.0f, 1e9f)), 1);
  EXPECT_EQ(num::ue8m0_exponent(std::nextafter(448.0f, 0.0f)), 0);
  EXPECT_EQ(num::ue8m0_exponent(1.0f), -8);  // 1/448 in (2^-9, 2^-8]
}

TEST(Numeric, Ue8m0ExponentFloorsTinyGroupsAt1e4) {
  const int floor_e = num::ue8m0_exponent(1e-4f);
  EXPECT_EQ(floor_e, -22);  // 1e-4 / 448 = 2.23e-7 in (2^-23, 2^-22]
  EXPECT_EQ(num::ue8m0_exponent(0.0f), floor_e);
  EXPECT_EQ(num::ue8m0_exponent(1e-30f), floor_e);
}

TEST(Numeric, Ue8m0ByteClampsAndScaleInverts) {
  EXPECT_EQ(num::ue8m0_byte(0), 127);
  EXPECT_EQ(num::ue8m0_byte(-127), 0);
  EXPECT_EQ(num::ue8m0_byte(-200), 0);
  EXPECT_EQ(num::ue8m0_byte(128), 255);
  EXPECT_EQ(num::ue8m0_byte(500), 255);
  for (int e = -30; e <= 30; ++e) EXPECT_EQ(num::ue8m0_scale(num::ue8m0_byte(e)), std::ldexp(1.0f, e));
  EXPECT_EQ(num::ue8m0_scale(0), std::ldexp(1.0f, -127));
}

}  // namespace
}  // namespace mlakv::test
