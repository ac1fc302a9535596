// Device primitives every kernel shares: vector types, 16-byte loads and stores, e4m3/bf16
// conversion, paged-cache addressing.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cstdint>

namespace mlakv::cuda::dev {

/// e4m3 byte -> float, exact.
__device__ __forceinline__ float e4m3_to_float(uint8_t c) {
  __nv_fp8_e4m3 v;
  v.__x = c;
  return static_cast<float>(v);
}

/// float -> e4m3 byte: round to nearest even, saturate finite to ±448, NaN -> NaN.
__device__ __forceinline__ uint8_t float_to_e4m3(float x) {
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3));
}

/// Two e4m3 bytes (low byte first) -> two floats, one cvt instruction.
__device__ __forceinline__ float2 e4m3x2_to_float2(uint16_t pair) {
  __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(pair), __NV_E4M3);
  return __half22float2(*reinterpret_cast<__half2*>(&h));
}

__device__ __forceinline__ float bf16_bits_to_float(uint16_t b) { return __uint_as_float(static_cast<uint32_t>(b) << 16); }

__device__ __forceinline__ uint16_t float_to_bf16_bits(float x) {
  __nv_bfloat16 h = __float2bfloat16_rn(x);
  return *reinterpret_cast<uint16_t*>(&h);
}

/// Byte address of slot `slot` in a paged cache (token `slot % bs` of block `slot / bs`).
__device__ __forceinline__ int64_t block_of(int64_t slot, int block_size) { return slot / block_size; }

template <class T> __device__ __forceinline__ T ldg_stream(const T* p) { return __ldcs(p); }

}  // namespace mlakv::cuda::dev
