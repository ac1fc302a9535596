// Element access for validated host tensors: rows of bf16/f32 values and strided index vectors.
// The CPU reference ops read and write through these so that every op honours row strides alike.
#pragma once

#include <cstdint>
#include <cstring>

#include "mlakv/numeric.hpp"
#include "mlakv/tensor.hpp"

namespace mlakv::cpu::rows {

/// Address of row r of a tensor whose first dimension indexes rows.
inline uint8_t* row_ptr(const Tensor& t, int64_t r) {
  return static_cast<uint8_t*>(t.data) + r * t.stride[0] * static_cast<int64_t>(dtype_size(t.dtype));
}

/// Reads n values of row r (bf16 or f32) as floats.
inline void load(const Tensor& t, int64_t r, int n, float* out) {
  const uint8_t* p = row_ptr(t, r);
  if (t.dtype == DType::f32) {
    std::memcpy(out, p, sizeof(float) * static_cast<std::size_t>(n));
    return;
  }
  for (int i = 0; i < n; ++i) {
    uint16_t b;
    std::memcpy(&b, p + 2 * i, 2);
    out[i] = num::bf16_to_f32(b);
  }
}

/// Writes n floats to row r, rounding to nearest even for bf16 rows.
inline void store(const Tensor& t, int64_t r, int n, const float* in) {
  uint8_t* p = row_ptr(t, r);
  if (t.dtype == DType::f32) {
    std::memcpy(p, in, sizeof(float) * static_cast<std::size_t>(n));
    return;
  }
  for (int i = 0; i < n; ++i) {
    const uint16_t b = num::f32_to_bf16(in[i]);
    std::memcpy(p + 2 * i, &b, 2);
  }
}

/// Element i of a 1-D integer tensor (i32 or i64), honouring its stride.
inline int64_t index_at(const Tensor& t, int64_t i) {
  if (t.dtype == DType::i64) return static_cast<const int64_t*>(t.data)[i * t.stride[0]];
  return static_cast<const int32_t*>(t.data)[i * t.stride[0]];
}

/// Element (i, j) of a 2-D int32 tensor (block tables).
inline int64_t index_at(const Tensor& t, int64_t i, int64_t j) {
  return static_cast<const int32_t*>(t.data)[i * t.stride[0] + j * t.stride[1]];
}

}  // namespace mlakv::cpu::rows
