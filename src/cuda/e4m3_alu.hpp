// e4m3 -> fp16 / bf16 by integer operations alone (prmt, shift, mask): the FP8 widenings'
// conversions (e4m3x4_to_f16x4_scaled, e4m3x4_to_bf16x4). Not faster than cvt.f16x2.e4m3x2
// elsewhere: that runs at ~54 pairs per clock per SM on an H100, this at ~31 (session 31,
// docs/perf/session31/). Plain C++ on the host too, so that a CPU test checks it over every code.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define MLAKV_E4M3_ALU_FN __host__ __device__ __forceinline__
#else
#define MLAKV_E4M3_ALU_FN inline
#endif

namespace mlakv::cuda::e4m3_alu {

/// What the fp16 conversions give is the value times 2^-8 (callers fold 2^8 back in), the bf16
/// ones the value times 2^-120.
inline constexpr float kUnscale = 256.0f;
inline constexpr float kUnscaleBf16 = 0x1p120f;

/// PTX prmt.b32 (default mode): byte i of the result is byte s_i & 7 of {b, a} (a's bytes 0–3),
/// or, where s_i & 8, that byte's sign bit replicated eight times.
MLAKV_E4M3_ALU_FN uint32_t prmt(uint32_t a, uint32_t b, uint32_t s) {
#if defined(__CUDA_ARCH__)
  uint32_t r;
  asm("prmt.b32 %0, %1, %2, %3;\n" : "=r"(r) : "r"(a), "r"(b), "r"(s));
  return r;
#else
  const uint64_t x = static_cast<uint64_t>(b) << 32 | a;
  uint32_t r = 0;
  for (int i = 0; i < 4; ++i) {
    const uint32_t n = s >> (4 * i) & 15u, byte = static_cast<uint32_t>(x >> (8 * (n & 7))) & 0xffu;
    r |= (n & 8 ? (byte & 0x80u ? 0xffu : 0u) : byte) << (8 * i);
  }
  return r;
#endif
}

/// Bytes p and q (0–7) of {b, a}, p in the low half, each code's 7 bits of exponent and mantissa
/// at bits kShift + 6 .. kShift of its 16-bit half and its sign at bit 15: prmt puts each code in
/// the low byte of its half with its sign replicated above, << kShift and the mask do the rest.
/// kShift 7 gives the fp16 of value · 2^-8, kShift 4 the bf16 of value · 2^-120 (subnormals
/// included: e4m3's exponent field lands in the low bits of the wider one). NaN codes (0x7f,
/// 0xff) come out as numbers (±480 times the factor).
template <int kShift>
MLAKV_E4M3_ALU_FN uint32_t e4m3x2_placed(uint32_t a, uint32_t b, uint32_t p, uint32_t q) {
  constexpr uint32_t m = 0x8000u | 0x7fu << kShift;
  return (prmt(a, b, p | (p | 8) << 4 | q << 8 | (q | 8) << 12) << kShift) & (m | m << 16);
}

/// Bytes 0–1 and 2–3 of w as fp16 pairs times 2^-8.
MLAKV_E4M3_ALU_FN void e4m3x4_to_f16x2x2_scaled(uint32_t w, uint32_t& lo, uint32_t& hi) {
  lo = e4m3x2_placed<7>(w, w, 0, 1);
  hi = e4m3x2_placed<7>(w, w, 2, 3);
}

/// Bytes 0–1 and 2–3 of w as bf16 pairs times 2^-120.
MLAKV_E4M3_ALU_FN void e4m3x4_to_bf16x2x2_scaled(uint32_t w, uint32_t& lo, uint32_t& hi) {
  lo = e4m3x2_placed<4>(w, w, 0, 1);
  hi = e4m3x2_placed<4>(w, w, 2, 3);
}

}  // namespace mlakv::cuda::e4m3_alu

#undef MLAKV_E4M3_ALU_FN
