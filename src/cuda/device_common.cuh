// Device primitives every kernel shares: vector types, 16-byte loads and stores with cache hints,
// cp.async, e4m3 / bf16 / UE8M0 conversion, index tensors and paged-cache addressing.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cstdint>

namespace mlakv::cuda::dev {

// ---------------------------------------------------------------------------------------------
// Scalar conversions (bit-exact with mlakv::num on the host).

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

// ---------------------------------------------------------------------------------------------
// Packed conversions: the forms the bandwidth kernels use (one instruction per two values).

/// Four e4m3 bytes (byte 0 first) -> four floats: two cvt.rn.f16x2.e4m3x2 (exact: every e4m3
/// value is a normal f16) and four f16 -> f32 widenings (exact).
__device__ __forceinline__ void e4m3x4_to_float(uint32_t q, float* f) {
  const float2 a = e4m3x2_to_float2(static_cast<uint16_t>(q & 0xffffu));
  const float2 b = e4m3x2_to_float2(static_cast<uint16_t>(q >> 16));
  f[0] = a.x;
  f[1] = a.y;
  f[2] = b.x;
  f[3] = b.y;
}

/// Two floats -> two e4m3 bytes in the low 16 bits (x first): cvt.rn.satfinite.e4m3x2.f32, the
/// same rounding as float_to_e4m3 per value.
__device__ __forceinline__ uint32_t float2_to_e4m3x2(float x, float y) {
  return static_cast<uint32_t>(__nv_cvt_float2_to_fp8x2(make_float2(x, y), __NV_SATFINITE, __NV_E4M3));
}

/// x / d for the e4m3 encoders, rounded exactly as an IEEE division, in four instructions instead
/// of the division's ~10 and its slow-path branch. With r = RN(1/d) and q = RN(x·r) within an ulp
/// of x/d, Markstein's step q + (x − q·d)·r (residual exact through the FMA) is the correctly
/// rounded quotient as long as nothing over- or underflows: x is first clamped to ±512·|d|, NaN
/// kept (every quotient past ±464 encodes as ±448 anyway), and |d| must lie in [2^-60, 2^60] so
/// that r, the clamp and the residual stay normal; other divisors take the true division.
struct E4m3Divider {
  float d, r, lim;
  bool fast;
  __device__ __forceinline__ explicit E4m3Divider(float divisor) : d(divisor) {
    const float a = fabsf(divisor);
    fast = a >= 0x1p-60f && a <= 0x1p60f;  // false for NaN
    r = __frcp_rn(divisor);
    lim = 512.0f * a;
  }
  /// The quotient by the fast path; valid only when `fast`.
  __device__ __forceinline__ float fast_div(float x) const {
    float xc;
    asm("min.NaN.f32 %0, %1, %2;" : "=f"(xc) : "f"(x), "f"(lim));
    asm("max.NaN.f32 %0, %1, %2;" : "=f"(xc) : "f"(xc), "f"(-lim));
    const float q = xc * r;
    // The correction is under an ulp, so it never changes the sign, except of a zero: -0 must stay -0.
    return copysignf(__fmaf_rn(__fmaf_rn(-q, d, xc), r, q), q);
  }
};

/// Four floats -> four e4m3 bytes packed little-endian.
__device__ __forceinline__ uint32_t float4_to_e4m3x4(float a, float b, float c, float d) {
  return float2_to_e4m3x2(a, b) | (float2_to_e4m3x2(c, d) << 16);
}

/// Two floats -> bf16x2 bits (x in the low half), round to nearest even: one cvt.rn.bf16x2.f32.
__device__ __forceinline__ uint32_t float2_to_bf16x2(float x, float y) {
  __nv_bfloat162 h = __floats2bfloat162_rn(x, y);
  return *reinterpret_cast<uint32_t*>(&h);
}

/// bf16x2 bits -> two floats (exact).
__device__ __forceinline__ float bf16lo(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf16hi(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }

/// UE8M0 byte -> 2^(b - 127) as a float, built from its bits. b = 0 is the subnormal 2^-127 and
/// b = 255 is +inf, as ldexp gives on the host.
__device__ __forceinline__ float ue8m0_to_float(uint32_t b) {
  return __uint_as_float(b == 0 ? 0x00400000u : (b << 23));
}

/// The UE8M0 exponent e = ceil(log2(max(amax, 1e-4) / 448)) of a 64-group, read off the
/// quotient's bits (exact, as the host's frexp). amax = inf gives 0, as glibc's frexp(inf) does.
__device__ __forceinline__ int ue8m0_exponent(float amax) {
  const uint32_t u = __float_as_uint(fmaxf(amax, 1e-4f) / 448.0f);
  const int biased = static_cast<int>(u >> 23);
  if (biased >= 255) return 0;
  return biased - 127 + ((u & 0x7fffffu) != 0u ? 1 : 0);  // the quotient is >= 2.2e-7: always normal
}

/// 2^-e as a float for the e above (|e| < 127).
__device__ __forceinline__ float exp2_neg(int e) { return __uint_as_float(static_cast<uint32_t>(127 - e) << 23); }

/// Maximum over the 32 lanes of a warp (every lane gets the result).
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// ---------------------------------------------------------------------------------------------
// Vector types and memory access.

template <int N> struct VecOf;
template <> struct VecOf<1> { using type = uint8_t; };
template <> struct VecOf<2> { using type = uint16_t; };
template <> struct VecOf<4> { using type = uint32_t; };
template <> struct VecOf<8> { using type = uint2; };
template <> struct VecOf<16> { using type = uint4; };
template <int N> using Vec = typename VecOf<N>::type;

/// Read-only, streaming load (ld.global.nc.L1::no_allocate): cache data is read once, so it should
/// not displace the block tables and scales that neighbouring lanes re-read from L1.
__device__ __forceinline__ uint4 ld_stream16(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}
__device__ __forceinline__ uint2 ld_stream8(const void* p) {
  uint2 v;
  asm volatile("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
  return v;
}
__device__ __forceinline__ uint32_t ld_stream4(const void* p) {
  uint32_t v;
  asm volatile("ld.global.nc.L1::no_allocate.u32 %0, [%1];" : "=r"(v) : "l"(p));
  return v;
}

/// Streaming store (st.global.cs): outputs are written once and not re-read by this kernel.
__device__ __forceinline__ void st_stream16(void* p, uint4 v) {
  asm volatile("st.global.cs.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
               : "memory");
}
__device__ __forceinline__ void st_stream8(void* p, uint2 v) {
  asm volatile("st.global.cs.v2.u32 [%0], {%1, %2};" ::"l"(p), "r"(v.x), "r"(v.y) : "memory");
}

/// Loads N bytes. Aligned: one access of N bytes (the address must be N-aligned). Otherwise byte
/// by byte, for views whose pointers or strides are not aligned (slow, but never wrong).
template <int N, bool Aligned> __device__ __forceinline__ Vec<N> load(const void* p) {
  if constexpr (Aligned) {
    if constexpr (N == 16) return ld_stream16(p);
    else if constexpr (N == 8) return ld_stream8(p);
    else if constexpr (N == 4) return ld_stream4(p);
    else return __ldg(static_cast<const Vec<N>*>(p));
  } else {
    union {
      Vec<N> v;
      uint8_t b[N];
    } u;
#pragma unroll
    for (int i = 0; i < N; ++i) u.b[i] = __ldg(static_cast<const uint8_t*>(p) + i);
    return u.v;
  }
}

template <int N, bool Aligned> __device__ __forceinline__ void store(void* p, Vec<N> v) {
  if constexpr (Aligned) {
    if constexpr (N == 16) st_stream16(p, v);
    else if constexpr (N == 8) st_stream8(p, v);
    else *static_cast<Vec<N>*>(p) = v;
  } else {
    union {
      Vec<N> v;
      uint8_t b[N];
    } u;
    u.v = v;
#pragma unroll
    for (int i = 0; i < N; ++i) static_cast<uint8_t*>(p)[i] = u.b[i];
  }
}

/// Words of a vector, for code that handles 8- and 16-byte vectors alike.
__device__ __forceinline__ uint32_t word(const uint4& v, int i) { return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w; }
__device__ __forceinline__ uint32_t word(const uint2& v, int i) { return i == 0 ? v.x : v.y; }

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// cp.async (global -> shared, 16 bytes, bypassing L1); src_bytes < 16 zero-fills the rest (0: no
// read at all).
__device__ __forceinline__ void cp_async16(uint32_t smem, const void* gmem, int src_bytes = 16) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem), "l"(gmem), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int src_bytes = 16) {
  cp_async16(smem_u32(smem), gmem, src_bytes);
}
// 4-byte form (through L1: .cg takes 16 bytes only); src_bytes 0 reads nothing and writes zeros.
__device__ __forceinline__ void cp_async4(uint32_t smem, const void* gmem, int src_bytes = 4) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(smem), "l"(gmem), "r"(src_bytes) : "memory");
}
// TMA (sm_90): one box of a tensor map (a __grid_constant__ argument: `map` is its generic
// address) into shared memory; the copy completes its bytes on the mbarrier at `bar`. Boxes
// outside the map's extent are written as zeros and not read.
__device__ __forceinline__ void tma_load_4d(uint32_t smem, const void* map, uint32_t bar, int c0, int c1, int c2, int c3) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5, %6}], [%2];"
      ::"r"(smem), "l"(map), "r"(bar), "r"(c0), "r"(c1), "r"(c2), "r"(c3)
      : "memory");
#endif
}
/// Fetches a tensor map into the TMA unit's descriptor cache ahead of its first copy.
__device__ __forceinline__ void tma_prefetch_map(const void* map) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("prefetch.tensormap [%0];" ::"l"(map) : "memory");
#endif
}
// The same box into the same shared-memory offset of every CTA of the cluster in `cta_mask`,
// completing its bytes on the mbarrier at `bar`'s offset in each of them.
__device__ __forceinline__ void tma_load_4d_multicast(uint32_t smem, const void* map, uint32_t bar, int c0, int c1,
                                                      int c2, int c3, uint16_t cta_mask) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.multicast::cluster"
      " [%0], [%1, {%3, %4, %5, %6}], [%2], %7;"
      ::"r"(smem), "l"(map), "r"(bar), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "h"(cta_mask)
      : "memory");
#endif
}

// Thread-block clusters (sm_90).
__device__ __forceinline__ uint32_t cluster_ctarank() {
  uint32_t r = 0;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
#endif
  return r;
}
__device__ __forceinline__ uint32_t cluster_nctarank() {
  uint32_t r = 1;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mov.u32 %0, %%cluster_nctarank;" : "=r"(r));
#endif
  return r;
}
// The address in CTA `rank`'s shared memory of the local shared-memory address `smem`.
__device__ __forceinline__ uint32_t cluster_map(uint32_t smem, uint32_t rank) {
  uint32_t r = smem;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(r) : "r"(smem), "r"(rank));
#endif
  return r;
}
// 16 bytes into another CTA's shared memory (`remote`, a shared::cluster address from
// cluster_map), completing 16 bytes of transaction count on the mbarrier at `remote_bar` there.
__device__ __forceinline__ void st_async16(uint32_t remote, uint4 v, uint32_t remote_bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.b32 [%0], {%1, %2, %3, %4}, [%5];"
               ::"r"(remote), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w), "r"(remote_bar)
               : "memory");
#endif
}
// Every thread of every CTA of the cluster: this thread's earlier memory operations (and, after
// mbarrier.init, the barriers) are visible cluster-wide before any thread passes.
__device__ __forceinline__ void cluster_sync() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.release;\nbarrier.cluster.wait.acquire;" ::: "memory");
#endif
}
__device__ __forceinline__ void fence_mbarrier_init_cluster() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
#endif
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int Pending> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(Pending) : "memory");
}

// ---------------------------------------------------------------------------------------------
// Index tensors and paged addressing.

/// A 1-D int32 or int64 tensor on the device (stride in elements); null means absent.
struct IndexVec {
  const void* data = nullptr;
  int64_t stride = 1;
  bool is64 = false;

  __device__ __forceinline__ int64_t operator[](int64_t i) const {
    return is64 ? __ldg(static_cast<const int64_t*>(data) + i * stride)
                : static_cast<int64_t>(__ldg(static_cast<const int32_t*>(data) + i * stride));
  }
  __host__ __device__ bool present() const { return data != nullptr; }
};

/// A block table [rows, cols] of int32 (strides in elements).
struct BlockTable {
  const int32_t* data = nullptr;
  int64_t stride0 = 0, stride1 = 1;
  int64_t cols = 0;

  /// Physical block of (row, logical block), or -1 when the logical block is past the table.
  __device__ __forceinline__ int64_t at(int64_t row, int64_t col) const {
    if (col < 0 || col >= cols) return -1;
    return __ldg(data + row * stride0 + col * stride1);
  }
};

/// A paged cache as the kernels see it.
struct Paged {
  uint8_t* base = nullptr;
  int64_t block_stride = 0;  ///< bytes
  int64_t num_blocks = 0;
  int block_size = 1;

  /// Block-table entries come from device memory the host never saw: any entry outside
  /// [0, num_blocks) is treated as absent (the row is skipped), never dereferenced.
  __device__ __forceinline__ bool valid_block(int64_t b) const { return b >= 0 && b < num_blocks; }
  __device__ __forceinline__ uint8_t* block(int64_t b) const { return base + b * block_stride; }
};

/// Byte address of slot `slot` in a paged cache (token `slot % bs` of block `slot / bs`).
__device__ __forceinline__ int64_t block_of(int64_t slot, int block_size) { return slot / block_size; }

template <class T> __device__ __forceinline__ T ldg_stream(const T* p) { return __ldcs(p); }

/// Splits a slot known to lie in [0, capacity) into (block, index in block). 32-bit division
/// when the capacity allows it: a 64-bit division is a ~70-instruction software routine.
__device__ __forceinline__ void split_slot(int64_t slot, int block_size, bool small, int64_t& blk, int& k);

/// The writers' walk: one warp per group of U input rows, grid-stride over [0, rows). The next
/// group's slots are loaded one iteration ahead, so that the slot lookup's latency hides under
/// this group's input loads instead of preceding them. load(u, row) runs for every kept row of a
/// group before store(u, row, slot) runs for any, so all of a group's loads are in flight first.
/// Negative slots and slots at or past `capacity` (device values the host never saw) are skipped.
template <int U, class Load, class Store>
__device__ __forceinline__ void for_each_slot_group(IndexVec slots, int64_t rows, int64_t capacity, Load&& load,
                                                    Store&& store) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int64_t step = ((static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5) * U;
  int64_t next_slot = -1;
  if (lane < U && warp * U + lane < rows) next_slot = slots[warp * U + lane];
  for (int64_t row0 = warp * U; row0 < rows; row0 += step) {
    const int64_t my_slot = next_slot;
    next_slot = -1;
    if (lane < U && row0 + step + lane < rows) next_slot = slots[row0 + step + lane];
    int64_t slot[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      slot[u] = __shfl_sync(0xffffffffu, my_slot, u);
      if (slot[u] >= capacity) slot[u] = -1;
      if (slot[u] >= 0) load(u, row0 + u);
    }
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (slot[u] >= 0) store(u, row0 + u, slot[u]);  // warp-uniform
  }
}

__device__ __forceinline__ void split_slot(int64_t slot, int block_size, bool small, int64_t& blk, int& k) {
  if ((block_size & (block_size - 1)) == 0) {  // the usual block sizes: a shift, no division routine
    blk = slot >> (__ffs(block_size) - 1);
    k = static_cast<int>(slot & (block_size - 1));
  } else if (small) {
    const uint32_t s = static_cast<uint32_t>(slot), b = static_cast<uint32_t>(block_size);
    const uint32_t q = s / b;
    blk = q;
    k = static_cast<int>(s - q * b);
  } else {
    blk = slot / block_size;
    k = static_cast<int>(slot - blk * block_size);
  }
}

}  // namespace mlakv::cuda::dev

// ---------------------------------------------------------------------------------------------
// One cached token's layout per format, and its dequantization in 16-byte output items.
// Used by the dequantizing gathers (ops 3 and 5).

#include "mlakv/format.hpp"

namespace mlakv::cuda::dev {

template <CacheFormat F> struct TokenGeom {
  /// Bytes from one token's data to the next inside a block (dsv4: data region only).
  static constexpr int kDataStride = F == CacheFormat::bf16 ? 1152 : F == CacheFormat::fp8 ? 576
                                     : F == CacheFormat::fp8_ds_mla ? 656 : 576;
  static constexpr int kWidth = F == CacheFormat::dsv4 ? 512 : 576;  ///< dequantized row width
  static constexpr int kQuant = F == CacheFormat::bf16 ? 0 : F == CacheFormat::fp8 ? 576
                                : F == CacheFormat::fp8_ds_mla ? 512 : 448;  ///< e4m3 values
  static constexpr int kRopeOffset = F == CacheFormat::fp8_ds_mla ? 528 : F == CacheFormat::dsv4 ? 448 : 0;
  static constexpr int kGroup = F == CacheFormat::fp8_ds_mla ? 128 : 64;  ///< values per scale
};

/// Dequantizes a token into rows of Out (bf16 or float) in chunks of 16 output bytes (8 bf16 or 4
/// float values). A chunk's input is 8 or 4 e4m3 bytes plus their scale, or 16 or 8 bytes of bf16.
/// Lane-consecutive chunks make a warp's loads and stores contiguous runs of whole sectors (a
/// lane that wrote 32 bytes as two 16-byte halves left every sector half-written per instruction,
/// and the L2 took twice the requests).
template <CacheFormat F, class Out> struct RowCodec {
  using G = TokenGeom<F>;
  static constexpr int kOutBytes = static_cast<int>(sizeof(Out));
  static constexpr int kChunkVals = 16 / kOutBytes;
  static constexpr int kChunks = G::kWidth / kChunkVals;  ///< chunks per output row
  static_assert(G::kQuant % kChunkVals == 0 && G::kGroup % kChunkVals == 0 && G::kRopeOffset % 16 == 0);

  struct Raw {
    uint4 v;     // the chunk's input bytes (low words first)
    uint32_t s;  // its scale: float bits (fp8_ds_mla) or UE8M0 byte (dsv4)
  };

  /// Loads chunk v0 (its first value) of a token's data (dsv4: r.s is filled in later, from the
  /// token's scale bytes that the row's lane loads once).
  template <bool A> __device__ __forceinline__ static void load_chunk(const uint8_t* tok, int v0, Raw& r) {
    if (v0 < G::kQuant) {
      if constexpr (kChunkVals == 8) {
        const uint2 q = load<8, A>(tok + v0);
        r.v.x = q.x, r.v.y = q.y;
      } else {
        r.v.x = load<4, A>(tok + v0);
      }
      if constexpr (F == CacheFormat::fp8_ds_mla) {
        const uint8_t* sp = tok + G::kQuant + 4 * (v0 / G::kGroup);
        if constexpr (A) r.s = __ldg(reinterpret_cast<const uint32_t*>(sp));  // shared by 16 lanes: keep in L1
        else r.s = load<4, false>(sp);
      }
    } else {
      const uint8_t* b = tok + G::kRopeOffset + 2 * (v0 - G::kQuant);  // the rope, or a whole bf16 row
      if constexpr (kChunkVals == 8) {
        r.v = load<16, A>(b);
      } else {
        const uint2 w = load<8, A>(b);
        r.v.x = w.x, r.v.y = w.y;
      }
    }
  }

  /// The chunk's 16 output bytes. Every product rounds once, as the host's float(q) * scale;
  /// bf16 then rounds to nearest even.
  __device__ __forceinline__ static uint4 convert_chunk(const Raw& r, int v0, float tensor_scale) {
    if (v0 < G::kQuant) {
      float s;
      if constexpr (F == CacheFormat::fp8) s = tensor_scale;
      else if constexpr (F == CacheFormat::fp8_ds_mla) s = __uint_as_float(r.s);
      else s = ue8m0_to_float(r.s);
      float f[8];
      e4m3x4_to_float(r.v.x, f);
      if constexpr (kChunkVals == 8) {
        e4m3x4_to_float(r.v.y, f + 4);
        return make_uint4(float2_to_bf16x2(f[0] * s, f[1] * s), float2_to_bf16x2(f[2] * s, f[3] * s),
                          float2_to_bf16x2(f[4] * s, f[5] * s), float2_to_bf16x2(f[6] * s, f[7] * s));
      } else {
        return make_uint4(__float_as_uint(f[0] * s), __float_as_uint(f[1] * s), __float_as_uint(f[2] * s),
                          __float_as_uint(f[3] * s));
      }
    }
    if constexpr (kChunkVals == 8) return r.v;  // bf16 -> bf16: a copy
    else
      return make_uint4(__float_as_uint(bf16lo(r.v.x)), __float_as_uint(bf16hi(r.v.x)), __float_as_uint(bf16lo(r.v.y)),
                        __float_as_uint(bf16hi(r.v.y)));
  }
};

/// Rows per warp tile for a codec: about 9 chunks a lane, ~100 bytes of loads in flight per lane
/// at ~100 registers.
template <class C> inline constexpr int kTileRows = 288 / C::kChunks > 0 ? 288 / C::kChunks : 1;

/// a / b and a % b for a >= 0, in 32 bits when a fits (the common case).
__device__ __forceinline__ void divmod_pos(int64_t a, int b, int64_t& q, int& r) {
  split_slot(a, b, (a >> 31) == 0, q, r);
}

/// The rows of one warp tile in flight. Lane j < RW holds row j's physical block (-1: skip the
/// row, leaving its output untouched) and index in block; load() issues every load of the tile
/// (U chunks a lane) and store() converts and writes them, row j at dst0 + j * dst_stride. Kernels
/// resolve the next tile's rows between the two, so that lookup hides under these loads.
/// Row addresses are computed once, by the row's lane, and shuffled to the lanes of its chunks.
template <CacheFormat F, class Out, int RW, bool A> struct TileInFlight {
  using C = RowCodec<F, Out>;
  using G = TokenGeom<F>;
  static constexpr int kTileChunks = RW * C::kChunks;
  static constexpr int U = (kTileChunks + 31) / 32;
  typename C::Raw raw[U];
  bool live[U];
  uint2 my_scales{0u, 0u};  // dsv4: the UE8M0 bytes of this lane's row

  __device__ __forceinline__ void load(const Paged& cache, int my_blk, int my_k) {
    const int lane = threadIdx.x & 31;
    const uint8_t* my_tok = nullptr;
    if (my_blk >= 0) {
      const uint8_t* block = cache.block(my_blk);
      my_tok = block + static_cast<int64_t>(G::kDataStride) * my_k;
      if constexpr (F == CacheFormat::dsv4)
        my_scales = dev::load<8, A>(block + static_cast<int64_t>(G::kDataStride) * cache.block_size + 8 * my_k);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int m = u * 32 + lane;
      const int r = m / C::kChunks, j = m - r * C::kChunks;
      const auto tok = reinterpret_cast<const uint8_t*>(
          __shfl_sync(0xffffffffu, reinterpret_cast<unsigned long long>(my_tok), r & 31));
      live[u] = m < kTileChunks && tok != nullptr;
      if (live[u]) C::template load_chunk<A>(tok, j * C::kChunkVals, raw[u]);
    }
  }

  __device__ __forceinline__ void store(uint8_t* dst0, int64_t dst_stride, float tensor_scale) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int m = u * 32 + lane;
      const int r = m / C::kChunks, j = m - r * C::kChunks;
      if constexpr (F == CacheFormat::dsv4) {
        const uint32_t lo = __shfl_sync(0xffffffffu, my_scales.x, r & 31), hi = __shfl_sync(0xffffffffu, my_scales.y, r & 31);
        const int g = j * C::kChunkVals / G::kGroup;
        raw[u].s = ((g < 4 ? lo : hi) >> (8 * (g & 3))) & 0xffu;
      }
      if (live[u]) dev::store<16, A>(dst0 + r * dst_stride + 16 * j, C::convert_chunk(raw[u], j * C::kChunkVals, tensor_scale));
    }
  }
};

}  // namespace mlakv::cuda::dev

#include <cuda_runtime.h>

namespace mlakv::cuda {

/// CTAs of `threads` threads that fit on one SM at once: a host-side occupancy query (no stream
/// work), cached per kernel.
template <auto Kernel> int blocks_per_sm(int threads) {
  static const int per_sm = [&] {
    int n = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, Kernel, threads, 0) != cudaSuccess || n < 1) {
      cudaGetLastError();
      n = 1;
    }
    return n;
  }();
  return per_sm;
}

/// Grid for a grid-stride kernel: enough CTAs for `want` units of work, at most as many as fit
/// on the device at once (so the tail is one partial wave, not a second queue of CTAs).
template <auto Kernel> int persistent_grid(int threads, int64_t want, int sms) {
  const int64_t cap = static_cast<int64_t>(blocks_per_sm<Kernel>(threads)) * sms;
  return static_cast<int>(want < cap ? (want < 1 ? 1 : want) : cap);
}

/// Rows per warp tile for a gather whose tile count at rw rows a tile is tiles(rw), run by `warps`
/// resident warps. A gather that fits in one round of single-row tiles takes them (the shortest
/// chain of dependent work per warp); otherwise R/2 where it gives the busiest warp at least 10 %
/// fewer rows (rounds × rows a tile) than R: one request of 32000 rows in tiles of 4 is 3 rounds
/// with the last one 16 % full, in tiles of 2 it is 5 nearly full ones. Smaller tiles keep fewer
/// bytes in flight per warp (measured: R/2 on 128 × 8192 loses 8 points), hence the margin.
template <class Tiles> int balanced_tile_rows(int R, int64_t warps, Tiles&& tiles) {
  if (tiles(1) <= warps) return 1;
  if (R / 2 < 1) return R;
  const int64_t full = (tiles(R) + warps - 1) / warps * R, half = (tiles(R / 2) + warps - 1) / warps * (R / 2);
  return 10 * half <= 9 * full ? R / 2 : R;
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace mlakv::cuda
