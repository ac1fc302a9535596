// Encoding and decoding of one cached token in each format (SPEC §2), shared by the CPU reference
// ops, the DCP context gather and the tests, so that every path stores and reads the same bits.
//
// Two addressings:
//  - in place: a pointer to the start of a block and the token's index in it (CacheDesc::token()
//    gives the offsets; dsv4 keeps data and scales in separate regions of the block);
//  - packed: a token's stored bytes laid end to end, token_bytes() of them, as gather_cache writes
//    them. For dsv4 that is its 576 data bytes followed by its 8 scale bytes.
#pragma once

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "mlakv/format.hpp"
#include "mlakv/numeric.hpp"

namespace mlakv::cpu::codec {

namespace detail {

inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline void store_u16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }
inline float load_f32(const uint8_t* p) {
  float v;
  std::memcpy(&v, p, 4);
  return v;
}
inline void store_f32(uint8_t* p, float v) { std::memcpy(p, &v, 4); }

// Where one token's parts are, whichever addressing found them.
struct Parts {
  const uint8_t* data;
  const uint8_t* scales;  // fp8_ds_mla, dsv4
  const uint8_t* rope;    // fp8_ds_mla, dsv4
};
struct MutParts {
  uint8_t* data;
  uint8_t* scales;
  uint8_t* rope;
};

inline Parts in_block(const CacheDesc& d, const uint8_t* block, int64_t k) {
  const TokenLayout t = d.token(k);
  return {block + t.data_offset, t.scale_offset >= 0 ? block + t.scale_offset : nullptr,
          t.rope_offset >= 0 ? block + t.rope_offset : nullptr};
}

inline MutParts in_block(const CacheDesc& d, uint8_t* block, int64_t k) {
  const Parts p = in_block(d, static_cast<const uint8_t*>(block), k);
  return {const_cast<uint8_t*>(p.data), const_cast<uint8_t*>(p.scales), const_cast<uint8_t*>(p.rope)};
}

inline Parts packed(CacheFormat f, const uint8_t* tok) {
  switch (f) {
    case CacheFormat::bf16:
    case CacheFormat::fp8: return {tok, nullptr, nullptr};
    case CacheFormat::fp8_ds_mla: return {tok, tok + kLatentDim, tok + kLatentDim + 16};
    case CacheFormat::dsv4:
      return {tok, tok + kDsv4QuantDim + 2 * kRopeDim, tok + kDsv4QuantDim};
  }
  return {tok, nullptr, nullptr};
}

inline void decode_parts(CacheFormat f, const Parts& p, float scale, float* out) {
  switch (f) {
    case CacheFormat::bf16:
      for (int i = 0; i < kHeadDim; ++i) out[i] = num::bf16_to_f32(load_u16(p.data + 2 * i));
      return;
    case CacheFormat::fp8:
      for (int i = 0; i < kHeadDim; ++i) out[i] = num::e4m3_to_f32(p.data[i]) * scale;
      return;
    case CacheFormat::fp8_ds_mla:
      for (int t = 0; t < kLatentDim / kDsMlaTile; ++t) {
        const float s = load_f32(p.scales + 4 * t);
        for (int i = t * kDsMlaTile; i < (t + 1) * kDsMlaTile; ++i) out[i] = num::e4m3_to_f32(p.data[i]) * s;
      }
      for (int i = 0; i < kRopeDim; ++i) out[kLatentDim + i] = num::bf16_to_f32(load_u16(p.rope + 2 * i));
      return;
    case CacheFormat::dsv4:
      for (int g = 0; g < kDsv4QuantDim / kDsv4GroupSize; ++g) {
        const float s = num::ue8m0_scale(p.scales[g]);
        for (int i = g * kDsv4GroupSize; i < (g + 1) * kDsv4GroupSize; ++i) out[i] = num::e4m3_to_f32(p.data[i]) * s;
      }
      for (int i = 0; i < kRopeDim; ++i) out[kDsv4QuantDim + i] = num::bf16_to_f32(load_u16(p.rope + 2 * i));
      return;
  }
}

}  // namespace detail

/// Decodes token k of `block` into row_width() floats (576, or 512 for dsv4). `scale` is the
/// per-tensor scale of an fp8 cache and ignored otherwise. Every product is exact in f32 (and the
/// bf16-representable ones exact in bf16): an e4m3 value times a power of two, or times a tile
/// scale, rounds once.
inline void decode_token(const CacheDesc& d, const uint8_t* block, int64_t k, float scale, float* out) {
  detail::decode_parts(d.format, detail::in_block(d, block, k), scale, out);
}

/// Decodes a token stored packed (token_bytes() bytes, as gather_cache writes it).
inline void decode_packed_token(CacheFormat f, const uint8_t* tok, float scale, float* out) {
  detail::decode_parts(f, detail::packed(f, tok), scale, out);
}

/// Encodes one MLA token (latent 512 + rope 64 floats) into token k of a bf16, fp8 or fp8_ds_mla
/// block. fp8 stores e4m3(x / scale) for all 576 values. fp8_ds_mla computes each 128-tile's scale
/// max(amax / 448, FLT_MIN) from the given values (so an all-zero tile never divides by zero) and
/// stores the rope as bf16.
inline void encode_mla_token(const CacheDesc& d, uint8_t* block, int64_t k, const float* latent, const float* rope,
                             float scale) {
  const detail::MutParts p = detail::in_block(d, block, k);
  switch (d.format) {
    case CacheFormat::bf16:
      for (int i = 0; i < kLatentDim; ++i) detail::store_u16(p.data + 2 * i, num::f32_to_bf16(latent[i]));
      for (int i = 0; i < kRopeDim; ++i) detail::store_u16(p.data + 2 * (kLatentDim + i), num::f32_to_bf16(rope[i]));
      return;
    case CacheFormat::fp8:
      for (int i = 0; i < kLatentDim; ++i) p.data[i] = num::f32_to_e4m3(latent[i] / scale);
      for (int i = 0; i < kRopeDim; ++i) p.data[kLatentDim + i] = num::f32_to_e4m3(rope[i] / scale);
      return;
    case CacheFormat::fp8_ds_mla:
      for (int t = 0; t < kLatentDim / kDsMlaTile; ++t) {
        float amax = 0.0f;
        for (int i = t * kDsMlaTile; i < (t + 1) * kDsMlaTile; ++i) amax = std::fmax(amax, std::fabs(latent[i]));
        const float s = std::fmax(amax / 448.0f, FLT_MIN);
        detail::store_f32(p.scales + 4 * t, s);
        for (int i = t * kDsMlaTile; i < (t + 1) * kDsMlaTile; ++i) p.data[i] = num::f32_to_e4m3(latent[i] / s);
      }
      for (int i = 0; i < kRopeDim; ++i) detail::store_u16(p.rope + 2 * i, num::f32_to_bf16(rope[i]));
      return;
    case CacheFormat::dsv4: return;  // dsv4 tokens have their own encoder
  }
}

/// Encodes one DeepSeek-V4 token (512 floats: 448 quantized + 64 rope) into token k of a dsv4
/// block: per 64-group a UE8M0 exponent e = ceil(log2(max(amax, 1e-4) / 448)), values
/// e4m3(x · 2^-e), byte 7 of the scales written as 0, rope as bf16.
inline void encode_dsv4_token(const CacheDesc& d, uint8_t* block, int64_t k, const float* row) {
  const detail::MutParts p = detail::in_block(d, block, k);
  for (int g = 0; g < kDsv4QuantDim / kDsv4GroupSize; ++g) {
    float amax = 0.0f;
    for (int i = g * kDsv4GroupSize; i < (g + 1) * kDsv4GroupSize; ++i) amax = std::fmax(amax, std::fabs(row[i]));
    const int e = num::ue8m0_exponent(amax);
    p.scales[g] = num::ue8m0_byte(e);
    for (int i = g * kDsv4GroupSize; i < (g + 1) * kDsv4GroupSize; ++i)
      p.data[i] = num::f32_to_e4m3(std::ldexp(row[i], -e));
  }
  p.scales[kDsv4QuantDim / kDsv4GroupSize] = 0;
  for (int i = 0; i < kRopeDim; ++i) detail::store_u16(p.rope + 2 * i, num::f32_to_bf16(row[kDsv4QuantDim + i]));
}

/// Copies token k's stored bytes out of a block into `dst` (token_bytes() bytes, packed).
inline void copy_token_bytes(const CacheDesc& d, const uint8_t* block, int64_t k, uint8_t* dst) {
  const TokenLayout t = d.token(k);
  if (d.format != CacheFormat::dsv4) {
    std::memcpy(dst, block + t.data_offset, static_cast<std::size_t>(d.token_bytes()));
    return;
  }
  std::memcpy(dst, block + t.data_offset, kDsv4QuantDim + 2 * kRopeDim);
  std::memcpy(dst + kDsv4QuantDim + 2 * kRopeDim, block + t.scale_offset, 8);
}

/// The inverse of copy_token_bytes: stores packed bytes as token k of a block.
inline void store_token_bytes(const CacheDesc& d, uint8_t* block, int64_t k, const uint8_t* src) {
  const TokenLayout t = d.token(k);
  if (d.format != CacheFormat::dsv4) {
    std::memcpy(block + t.data_offset, src, static_cast<std::size_t>(d.token_bytes()));
    return;
  }
  std::memcpy(block + t.data_offset, src, kDsv4QuantDim + 2 * kRopeDim);
  std::memcpy(block + t.scale_offset, src + kDsv4QuantDim + 2 * kRopeDim, 8);
}

}  // namespace mlakv::cpu::codec
