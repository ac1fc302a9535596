// Op 1 (write_cache / concat_and_cache_mla) on the GPU.
//
// One warp per token row: lane l owns latent values [16l, 16l+16) and, for l < 8, rope values
// [8l, 8l+8), so every load and store is one or two 16-byte accesses and an fp8_ds_mla tile
// (128 values) is exactly 8 lanes, reduced with three shuffles. A warp takes U consecutive rows
// at a time: one coalesced load of their slots, then all U rows' inputs in flight before the
// first store. Rows whose slot is negative (DCP: another rank's token) or past the cache's
// capacity are never read.
#include <cfloat>

#include "backend.hpp"
#include "device_common.cuh"
#include "runtime.hpp"

namespace mlakv::cuda {
namespace {

struct WriteParams {
  const uint8_t* kv_c;  // [T', 512]
  const uint8_t* k_pe;  // [T', 64]
  int64_t kv_stride;    // bytes between rows
  int64_t pe_stride;
  dev::IndexVec slots;  // [T]
  int64_t rows;         // T
  dev::Paged cache;
  int64_t capacity;       // num_blocks * block_size
  bool small_capacity;    // capacity < 2^32: 32-bit slot division
  const float* scale;     // fp8: device scalar
};

constexpr int kThreads = 128;  // small CTAs: finer occupancy steps at ~90 registers a thread

// Input values of one lane: 16 latent, 8 rope, as 16-byte vectors of In.
template <class In> struct LaneIn {
  static constexpr int kLat = 16 * sizeof(In) / 16;
  static constexpr int kRope = 8 * sizeof(In) / 16;
  uint4 lat[kLat];
  uint4 rope[kRope];
};

template <class In, int N> __device__ __forceinline__ void to_float(const uint4 (&v)[N], float* f) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      const uint32_t x = dev::word(v[i], w);
      if constexpr (sizeof(In) == 2) {
        f[8 * i + 2 * w] = dev::bf16lo(x);
        f[8 * i + 2 * w + 1] = dev::bf16hi(x);
      } else {
        f[4 * i + w] = __uint_as_float(x);
      }
    }
  }
}

// n floats (multiple of 8) -> bf16 in 16-byte vectors.
template <int N> __device__ __forceinline__ void to_bf16(const float* f, uint4* out) {
#pragma unroll
  for (int i = 0; i < N / 8; ++i)
    out[i] = make_uint4(dev::float2_to_bf16x2(f[8 * i], f[8 * i + 1]), dev::float2_to_bf16x2(f[8 * i + 2], f[8 * i + 3]),
                        dev::float2_to_bf16x2(f[8 * i + 4], f[8 * i + 5]), dev::float2_to_bf16x2(f[8 * i + 6], f[8 * i + 7]));
}

// N floats -> N e4m3 bytes, packed four to a word, each value through `div` first.
template <int N, class Div> __device__ __forceinline__ void quantize(const float* f, uint32_t* q, Div&& div) {
#pragma unroll
  for (int i = 0; i < N / 4; ++i)
    q[i] = dev::float4_to_e4m3x4(div(f[4 * i]), div(f[4 * i + 1]), div(f[4 * i + 2]), div(f[4 * i + 3]));
}

template <CacheFormat F, class In, bool A>
__device__ __forceinline__ void encode_row(const LaneIn<In>& in, uint8_t* tok, int lane, const dev::E4m3Divider& div) {
  float lat[16], rope[8];
  to_float<In>(in.lat, lat);
  to_float<In>(in.rope, rope);
  if constexpr (F == CacheFormat::bf16) {
    uint4 o[2];
    if constexpr (sizeof(In) == 2) {
      o[0] = in.lat[0];  // bf16 -> bf16 rounds to itself
      o[1] = in.lat[1];
    } else {
      to_bf16<16>(lat, o);
    }
    dev::store<16, A>(tok + 32 * lane, o[0]);
    dev::store<16, A>(tok + 32 * lane + 16, o[1]);
    if (lane < 8) {
      uint4 r;
      if constexpr (sizeof(In) == 2) r = in.rope[0];
      else to_bf16<8>(rope, &r);
      dev::store<16, A>(tok + 2 * kLatentDim + 16 * lane, r);
    }
  } else if constexpr (F == CacheFormat::fp8) {
    // x / scale rounded as the host's division; the divider's range test is once per kernel.
    uint32_t q[4], r[2];
    if (div.fast) {
      quantize<16>(lat, q, [&](float x) { return div.fast_div(x); });
      quantize<8>(rope, r, [&](float x) { return div.fast_div(x); });
    } else {
      quantize<16>(lat, q, [&](float x) { return x / div.d; });
      quantize<8>(rope, r, [&](float x) { return x / div.d; });
    }
    dev::store<16, A>(tok + 16 * lane, make_uint4(q[0], q[1], q[2], q[3]));
    if (lane < 8) dev::store<8, A>(tok + kLatentDim + 8 * lane, make_uint2(r[0], r[1]));
  } else {  // fp8_ds_mla
    float amax = 0.0f;
#pragma unroll
    for (int i = 0; i < 16; ++i) amax = fmaxf(amax, fabsf(lat[i]));
    // Lanes 8t..8t+7 hold tile t: reduce within aligned groups of 8.
    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 2));
    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 4));
    const float s = fmaxf(amax / 448.0f, FLT_MIN);
    const dev::E4m3Divider tile(s);
    uint32_t q[4];
    if (tile.fast) quantize<16>(lat, q, [&](float x) { return tile.fast_div(x); });
    else quantize<16>(lat, q, [&](float x) { return x / s; });
    dev::store<16, A>(tok + 16 * lane, make_uint4(q[0], q[1], q[2], q[3]));
    if ((lane & 7) == 0) dev::store<4, A>(tok + kLatentDim + 4 * (lane >> 3), __float_as_uint(s));
    if (lane < 8) {
      uint4 r;
      if constexpr (sizeof(In) == 2) r = in.rope[0];
      else to_bf16<8>(rope, &r);
      dev::store<16, A>(tok + kLatentDim + 16 + 16 * lane, r);
    }
  }
}

template <CacheFormat F, class In, bool A, int U>
__global__ void __launch_bounds__(kThreads) write_cache_kernel(const WriteParams p) {
  constexpr int kTokBytes = dev::TokenGeom<F>::kDataStride;
  const int lane = threadIdx.x & 31;
  const dev::E4m3Divider div(F == CacheFormat::fp8 ? __ldg(p.scale) : 1.0f);
  LaneIn<In> in[U];
  dev::for_each_slot_group<U>(
      p.slots, p.rows, p.capacity,
      [&](int u, int64_t row) {
        const uint8_t* lat = p.kv_c + row * p.kv_stride + lane * 16 * static_cast<int>(sizeof(In));
#pragma unroll
        for (int i = 0; i < LaneIn<In>::kLat; ++i) in[u].lat[i] = dev::load<16, A>(lat + 16 * i);
        if (lane < 8) {
          const uint8_t* rope = p.k_pe + row * p.pe_stride + lane * 8 * static_cast<int>(sizeof(In));
#pragma unroll
          for (int i = 0; i < LaneIn<In>::kRope; ++i) in[u].rope[i] = dev::load<16, A>(rope + 16 * i);
        } else {
#pragma unroll
          for (int i = 0; i < LaneIn<In>::kRope; ++i) in[u].rope[i] = make_uint4(0u, 0u, 0u, 0u);
        }
      },
      [&](int u, int64_t, int64_t slot) {
        int64_t blk;
        int k;
        dev::split_slot(slot, p.cache.block_size, p.small_capacity, blk, k);
        encode_row<F, In, A>(in[u], p.cache.block(blk) + static_cast<int64_t>(kTokBytes) * k, lane, div);
      });
}

template <CacheFormat F, class In, bool A> void launch(const WriteParams& p, int sms, cudaStream_t stream) {
  constexpr int U = sizeof(In) == 2 ? 4 : 2;  // ~48 registers of input in flight either way
  constexpr auto kernel = write_cache_kernel<F, In, A, U>;
  const int64_t groups = (p.rows + U - 1) / U;
  const int grid = persistent_grid<kernel>(kThreads, (groups + kThreads / 32 - 1) / (kThreads / 32), sms);
  kernel<<<grid, kThreads, 0, stream>>>(p);
  check_launch("write_cache_kernel");
}

template <class In, bool A> void launch_format(CacheFormat f, const WriteParams& p, int sms, cudaStream_t s) {
  switch (f) {
    case CacheFormat::bf16: return launch<CacheFormat::bf16, In, A>(p, sms, s);
    case CacheFormat::fp8: return launch<CacheFormat::fp8, In, A>(p, sms, s);
    case CacheFormat::fp8_ds_mla: return launch<CacheFormat::fp8_ds_mla, In, A>(p, sms, s);
    case CacheFormat::dsv4: detail::fail("write_cache: dsv4 caches are written by dsv4_write");
  }
}

}  // namespace

void write_cache(const Tensor& kv_c, const Tensor& k_pe, const Tensor& slot_mapping, const Cache& cache,
                 Stream stream) {
  const int64_t rows = slot_mapping.size(0);
  if (rows == 0) return;
  const int64_t es = static_cast<int64_t>(dtype_size(kv_c.dtype));
  WriteParams p{};
  p.kv_c = static_cast<const uint8_t*>(kv_c.data);
  p.k_pe = static_cast<const uint8_t*>(k_pe.data);
  p.kv_stride = kv_c.stride[0] * es;
  p.pe_stride = k_pe.stride[0] * es;
  p.slots = {slot_mapping.data, slot_mapping.stride[0], slot_mapping.dtype == DType::i64};
  p.rows = rows;
  p.cache = {static_cast<uint8_t*>(cache.data), cache.desc.stride_bytes(), cache.desc.num_blocks, cache.desc.block_size};
  p.capacity = cache.desc.capacity_tokens();
  p.small_capacity = p.capacity <= 0xffffffffLL;
  p.scale = cache.scale;
  const bool aligned = aligned16(p.kv_c) && aligned16(p.k_pe) && p.kv_stride % 16 == 0 && p.pe_stride % 16 == 0 &&
                       aligned16(p.cache.base) && p.cache.block_stride % 16 == 0;
  const int sms = sm_count(cache.device.index);
  const cudaStream_t s = to_cuda(stream);
  if (kv_c.dtype == DType::f32) {
    aligned ? launch_format<float, true>(cache.desc.format, p, sms, s)
            : launch_format<float, false>(cache.desc.format, p, sms, s);
  } else {
    aligned ? launch_format<__nv_bfloat16, true>(cache.desc.format, p, sms, s)
            : launch_format<__nv_bfloat16, false>(cache.desc.format, p, sms, s);
  }
}

}  // namespace mlakv::cuda
