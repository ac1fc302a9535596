// Small numeric pieces shared by the CPU attention ops (mla_decode, merge_states, the DCP merge
// kernels), which all accumulate in double and round once at the end.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "mlakv/numeric.hpp"
#include "mlakv/tensor.hpp"

namespace mlakv::cpu {

inline constexpr double kNegInf = -std::numeric_limits<double>::infinity();

/// An LSE as a merge weight: +inf and NaN carry no usable mass, so they count as empty.
inline double lse_or_empty(float x) { return (std::isnan(x) || x == INFINITY) ? kNegInf : static_cast<double>(x); }

/// double -> bf16 bits with one round-to-nearest-even. Going through float would round twice: a
/// double just off a bf16 midpoint can land exactly on it in float and then tie the wrong way.
/// Rounding to float by round-to-odd first keeps the information the second rounding needs.
inline uint16_t double_to_bf16(double x) {
  float f = static_cast<float>(x);
  if (std::isfinite(f) && static_cast<double>(f) != x) {
    uint32_t u = std::bit_cast<uint32_t>(f);
    if (std::fabs(static_cast<double>(f)) > std::fabs(x)) --u;  // truncate toward zero
    u |= 1u;
    f = std::bit_cast<float>(u);
  }
  return num::f32_to_bf16(f);
}

/// Stores one value into a bf16 or f32 element.
inline void store_value(void* p, DType dt, double v) {
  if (dt == DType::bf16) {
    const uint16_t b = double_to_bf16(v);
    std::memcpy(p, &b, 2);
  } else {
    const float f = static_cast<float>(v);
    std::memcpy(p, &f, 4);
  }
}

/// Loads one bf16 or f32 element.
inline double load_value(const void* p, DType dt) {
  if (dt == DType::bf16) {
    uint16_t b;
    std::memcpy(&b, p, 2);
    return num::bf16_to_f32(b);
  }
  float f;
  std::memcpy(&f, p, 4);
  return f;
}

/// Byte address of element (i0, i1, ...) of a strided tensor, for the first `n` indices; the
/// remaining dimensions start at 0.
inline uint8_t* element_ptr(const Tensor& t, std::initializer_list<int64_t> idx) {
  int64_t off = 0;
  int d = 0;
  for (int64_t i : idx) off += i * t.stride[d++];
  return static_cast<uint8_t*>(t.data) + off * static_cast<int64_t>(dtype_size(t.dtype));
}

}  // namespace mlakv::cpu
