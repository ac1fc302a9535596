// e4m3 -> fp16 by integer operations alone (prmt, shift, mask): the fp8_ds_mla widening's
// conversion (e4m3x4_to_f16x4_scaled). Not faster than cvt.f16x2.e4m3x2 elsewhere: that runs at
// ~54 pairs per clock per SM on an H100, this at ~31 (session 31, docs/perf/session31/). Plain
// C++ on the host too, so that a CPU test checks it over every code.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define MLAKV_E4M3_ALU_FN __host__ __device__ __forceinline__
#else
#define MLAKV_E4M3_ALU_FN inline
#endif

namespace mlakv::cuda::e4m3_alu {

/// What the conversions give is the value times 2^-8 (callers fold 2^8 back in after their sums):
/// an e4m3 code's 7 bits of exponent and mantissa, at fp16's bits 13..7, are exactly the fp16 of
/// value · 2^-8, subnormals included (e4m3's 4-bit exponent lands in the low bits of fp16's 5).
inline constexpr float kUnscale = 256.0f;

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

/// Bytes p and q (0–7) of {b, a} as an fp16 pair times 2^-8, p in the low half: prmt puts each
/// code in the low byte of its half with its sign replicated above, << 7 and the mask keep the
/// sign at bit 15 and exponent|mantissa at bits 13..7. NaN codes (0x7f, 0xff) come out as
/// ±480 · 2^-8.
MLAKV_E4M3_ALU_FN uint32_t e4m3x2_to_f16x2_scaled(uint32_t a, uint32_t b, uint32_t p, uint32_t q) {
  return (prmt(a, b, p | (p | 8) << 4 | q << 8 | (q | 8) << 12) << 7) & 0xbf80bf80u;
}

/// Bytes 0–1 and 2–3 of w as fp16 pairs times 2^-8.
MLAKV_E4M3_ALU_FN void e4m3x4_to_f16x2x2_scaled(uint32_t w, uint32_t& lo, uint32_t& hi) {
  lo = e4m3x2_to_f16x2_scaled(w, w, 0, 1);
  hi = e4m3x2_to_f16x2_scaled(w, w, 2, 3);
}

}  // namespace mlakv::cuda::e4m3_alu

#undef MLAKV_E4M3_ALU_FN
