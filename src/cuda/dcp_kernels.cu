// CUDA versions of the DCP kernels (src/dcp/dcp_ops.hpp); src/cpu/dcp_kernels.cpp is the
// reference they must reproduce. Every launcher is asynchronous on its stream, allocates nothing
// and never synchronizes the host, so a whole DCP step can be captured in a CUDA graph. Byte
// moves and dequantization are bit-exact with the CPU codec; merges run in fp32.
//
// Index data that lives on the device (block tables, lengths, offsets) was never seen by the
// host, so the context kernels treat any out-of-range value as "skip this row" rather than
// dereference it.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "backend.hpp"
#include "cuda/device_common.cuh"
#include "cuda/runtime.hpp"
#include "dcp/dcp_ops.hpp"

namespace mlakv::dcp::ops {
namespace {

namespace dev = mlakv::cuda::dev;
using mlakv::cuda::check_launch;
using mlakv::cuda::to_cuda;

constexpr int K = kHeadDim;    // 576
constexpr int D = kLatentDim;  // 512
constexpr int kThreads = 256;

// ---- host helpers -------------------------------------------------------------------------------

// Blocks for `items` threads; the kernels loop grid-stride, so the cap only bounds the launch.
unsigned blocks_for(int64_t items) {
  const int64_t b = (items + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::min<int64_t>(b, int64_t{1} << 20));
}

bool aligned(const void* p, std::size_t a) { return reinterpret_cast<std::uintptr_t>(p) % a == 0; }

// A [.., rows, width] view whose rows start every `stride` elements supports `bytes`-wide vector
// access when the base and every row start are `bytes`-aligned.
bool rows_aligned(const Tensor& t, int dims, std::size_t bytes) {
  if (!aligned(t.data, bytes)) return false;
  for (int d = 0; d < dims; ++d)
    if ((static_cast<std::size_t>(t.stride[d]) * dtype_size(t.dtype)) % bytes != 0) return false;
  return true;
}

// ---- device helpers -----------------------------------------------------------------------------

__device__ __forceinline__ int64_t grid_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_threads() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

__device__ __forceinline__ int owner_of(int64_t t, int world, int interleave) {
  return static_cast<int>((t / interleave) % world);
}
__device__ __forceinline__ int64_t local_index_of(int64_t t, int world, int interleave) {
  return (t / (static_cast<int64_t>(interleave) * world)) * interleave + t % interleave;
}
__device__ __forceinline__ int64_t local_length_of(int64_t L, int rank, int world, int interleave) {
  const int64_t base = (L / (static_cast<int64_t>(interleave) * world)) * interleave;
  const int64_t extra = L - base * world - static_cast<int64_t>(rank) * interleave;
  return base + (extra < 0 ? 0 : (extra > interleave ? interleave : extra));
}

// 16-, 8- and 4-byte accesses; the unaligned forms go byte by byte (views with odd strides),
// assembling the words with shifts.
template <int N> struct Bytes;
template <> struct Bytes<16> { using type = uint4; };
template <> struct Bytes<8> { using type = uint2; };
template <int N> using BytesT = typename Bytes<N>::type;

__device__ __forceinline__ uint32_t word_of(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}
__device__ __forceinline__ uint32_t word_of(const uint2& v, int i) { return i == 0 ? v.x : v.y; }
__device__ __forceinline__ void set_word(uint4& v, int i, uint32_t w) {
  if (i == 0) v.x = w;
  else if (i == 1) v.y = w;
  else if (i == 2) v.z = w;
  else v.w = w;
}
__device__ __forceinline__ void set_word(uint2& v, int i, uint32_t w) {
  if (i == 0) v.x = w;
  else v.y = w;
}

template <int N, bool Aligned> __device__ __forceinline__ BytesT<N> load_bytes(const void* p) {
  if constexpr (Aligned) {
    return __ldg(static_cast<const BytesT<N>*>(p));
  } else {
    const auto* b = static_cast<const uint8_t*>(p);
    BytesT<N> v;
#pragma unroll
    for (int w = 0; w < N / 4; ++w) {
      uint32_t x = 0;
#pragma unroll
      for (int i = 0; i < 4; ++i) x |= static_cast<uint32_t>(__ldg(b + 4 * w + i)) << (8 * i);
      set_word(v, w, x);
    }
    return v;
  }
}

template <int N, bool Aligned> __device__ __forceinline__ void store_bytes(void* p, BytesT<N> v) {
  if constexpr (Aligned) {
    *static_cast<BytesT<N>*>(p) = v;
  } else {
    auto* b = static_cast<uint8_t*>(p);
#pragma unroll
    for (int w = 0; w < N / 4; ++w) {
      const uint32_t x = word_of(v, w);
#pragma unroll
      for (int i = 0; i < 4; ++i) b[4 * w + i] = static_cast<uint8_t>(x >> (8 * i));
    }
  }
}

__device__ __forceinline__ float bf16_lo(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }

// Round to nearest even, as the host's f32_to_bf16 (and double_to_bf16 of an exact float).
__device__ __forceinline__ uint32_t bf16x2_bits(float lo, float hi) {
  return static_cast<uint32_t>(dev::float_to_bf16_bits(lo)) | (static_cast<uint32_t>(dev::float_to_bf16_bits(hi)) << 16);
}


// 2^(b - 127), as the host's ldexp(1, b - 127) (b = 0 is the subnormal 2^-127, 255 is +inf).
__device__ __forceinline__ float ue8m0(uint32_t b) { return __uint_as_float(b == 0 ? 0x00400000u : (b << 23)); }

// Stores V consecutive floats (V = 4 or 8) to a bf16 or f32 row. Vec: the address is aligned to
// the store's full width (8/16 bytes for bf16, 16 for f32).
template <bool F32> __device__ __forceinline__ void store_value(void* p, float v);

template <int V, bool F32, bool Vec> __device__ __forceinline__ void store_values(void* p, const float* v) {
  if constexpr (!Vec) {  // element-aligned only: one store per value
#pragma unroll
    for (int i = 0; i < V; ++i)
      store_value<F32>(F32 ? static_cast<void*>(static_cast<float*>(p) + i) : static_cast<void*>(static_cast<uint16_t*>(p) + i), v[i]);
  } else if constexpr (F32) {
#pragma unroll
    for (int i = 0; i < V; i += 4) {
      const uint4 w{__float_as_uint(v[i]), __float_as_uint(v[i + 1]), __float_as_uint(v[i + 2]),
                    __float_as_uint(v[i + 3])};
      store_bytes<16, Vec>(static_cast<float*>(p) + i, w);
    }
  } else if constexpr (V == 4) {
    store_bytes<8, Vec>(p, uint2{bf16x2_bits(v[0], v[1]), bf16x2_bits(v[2], v[3])});
  } else {
#pragma unroll
    for (int i = 0; i < V; i += 8) {
      const uint4 w{bf16x2_bits(v[i], v[i + 1]), bf16x2_bits(v[i + 2], v[i + 3]), bf16x2_bits(v[i + 4], v[i + 5]),
                    bf16x2_bits(v[i + 6], v[i + 7])};
      store_bytes<16, Vec>(static_cast<uint16_t*>(p) + i, w);
    }
  }
}

template <bool F32> __device__ __forceinline__ void store_value(void* p, float v) {
  if constexpr (F32) *static_cast<float*>(p) = v;
  else *static_cast<uint16_t*>(p) = dev::float_to_bf16_bits(v);
}

// An LSE that carries no usable mass (+inf, NaN) is an empty partial, like -inf.
__device__ __forceinline__ float lse_or_empty(float x) { return (isnan(x) || x == INFINITY) ? -INFINITY : x; }

// Merge of n partials whose LSEs sit `step` floats apart: the max m and 1 / Σ exp(lse − m).
struct MergeStats {
  float m;
  float inv_sum;
  float lse;  // m + log Σ, or -inf when all are empty
};

__device__ __forceinline__ MergeStats merge_stats(const float* lse, int n, std::size_t step) {
  float m = -INFINITY;
  for (int s = 0; s < n; ++s) m = fmaxf(m, lse_or_empty(lse[s * step]));
  if (m == -INFINITY) return {m, 0.0f, -INFINITY};
  float sum = 0.0f;
  for (int s = 0; s < n; ++s) sum += expf(lse_or_empty(lse[s * step]) - m);
  return {m, 1.0f / sum, m + logf(sum)};
}

// Weight of one partial in a merge (0 for an empty one, whatever its output holds).
__device__ __forceinline__ float merge_weight(const MergeStats& st, float lse) {
  const float l = lse_or_empty(lse);
  if (st.m == -INFINITY || l == -INFINITY) return 0.0f;
  return expf(l - st.m) * st.inv_sum;
}

// ---- slot_mapping -------------------------------------------------------------------------------

__global__ void slot_mapping_kernel(const int64_t* positions, int64_t pos_stride, const int32_t* token_to_req,
                                    int64_t req_stride, const int32_t* table, int64_t table_stride, int64_t batch,
                                    int64_t max_blocks, int block_size, int world, int rank, int interleave,
                                    int64_t* slots, int64_t slot_stride, int64_t tokens) {
  for (int64_t t = grid_index(); t < tokens; t += grid_threads()) {
    const int64_t pos = __ldg(positions + t * pos_stride);
    const int64_t req = __ldg(token_to_req + t * req_stride);
    int64_t slot = -1;
    if (pos >= 0 && req >= 0 && req < batch && owner_of(pos, world, interleave) == rank) {
      const int64_t j = local_index_of(pos, world, interleave);
      const int64_t col = j / block_size;
      if (col < max_blocks) {
        const int64_t block = __ldg(table + req * table_stride + col);
        if (block >= 0) slot = block * block_size + j % block_size;
      }
    }
    slots[t * slot_stride] = slot;
  }
}

void slot_mapping(const Tensor& positions, const Tensor& token_to_req, const Tensor& block_table, int block_size,
                  DcpShard shard, const Tensor& slots, Stream stream) {
  const int64_t tokens = positions.shape[0];
  if (tokens == 0) return;
  cuda::set_device(positions.device);
  slot_mapping_kernel<<<blocks_for(tokens), kThreads, 0, to_cuda(stream)>>>(
      positions.ptr<const int64_t>(), positions.stride[0], token_to_req.ptr<const int32_t>(), token_to_req.stride[0],
      block_table.ptr<const int32_t>(), block_table.stride[0], block_table.shape[0], block_table.shape[1], block_size,
      shard.world, shard.rank, shard.interleave, slots.ptr<int64_t>(), slots.stride[0], tokens);
  check_launch("dcp slot_mapping");
}

// ---- query exchange -----------------------------------------------------------------------------

// 8 bf16 (one 16-byte chunk) -> 8 e4m3 bytes of x / scale. Division, not a reciprocal multiply,
// so the bytes match the host's.
__device__ __forceinline__ uint2 quantize8(const uint4& v, float scale) {
  uint32_t out[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const uint32_t a = word_of(v, 2 * h), b = word_of(v, 2 * h + 1);
    out[h] = dev::float2_to_e4m3x2(bf16_lo(a) / scale, bf16_hi(a) / scale) |
             (dev::float2_to_e4m3x2(bf16_lo(b) / scale, bf16_hi(b) / scale) << 16);
  }
  return uint2{out[0], out[1]};
}

constexpr int kQChunks = K * 2 / 16;  // 16-byte chunks of one bf16 query row: 72

template <bool ToE4m3, bool Aligned>
__global__ void pack_q_kernel(const uint16_t* q, int64_t s0, int64_t s1, int64_t s2, int64_t S, int64_t N,
                              uint8_t* dst, const float* q_scale, int64_t rows) {
  const float scale = ToE4m3 ? __ldg(q_scale) : 1.0f;
  const int64_t items = rows * kQChunks;
  for (int64_t i = grid_index(); i < items; i += grid_threads()) {
    const int64_t row = i / kQChunks;
    const int c = static_cast<int>(i - row * kQChunks);
    const int64_t n = row % N, s = (row / N) % S, b = row / (N * S);
    const uint4 v = load_bytes<16, Aligned>(q + b * s0 + s * s1 + n * s2 + c * 8);
    if constexpr (ToE4m3) store_bytes<8, true>(dst + row * K + c * 8, quantize8(v, scale));
    else store_bytes<16, true>(dst + row * K * 2 + c * 16, v);
  }
}

void pack_q(const Tensor& q, void* dst, bool to_e4m3, const float* q_scale, Stream stream) {
  const int64_t rows = q.shape[0] * q.shape[1] * q.shape[2];
  if (rows == 0) return;
  cuda::set_device(q.device);
  const bool vec = rows_aligned(q, 3, 16);
  auto* d = static_cast<uint8_t*>(dst);
  const auto* src = q.ptr<const uint16_t>();
  const dim3 grid(blocks_for(rows * kQChunks));
  auto launch = [&](auto kernel) {
    kernel<<<grid, kThreads, 0, to_cuda(stream)>>>(src, q.stride[0], q.stride[1], q.stride[2], q.shape[1], q.shape[2],
                                                    d, q_scale, rows);
  };
  if (to_e4m3) vec ? launch(pack_q_kernel<true, true>) : launch(pack_q_kernel<true, false>);
  else vec ? launch(pack_q_kernel<false, true>) : launch(pack_q_kernel<false, false>);
  check_launch("dcp pack_q");
}

// src [W][T][N][K] -> dst [T][W·N][K], one 16-byte source chunk per item. InBytes: 2 (bf16) or 1.
template <int InBytes, bool Quantize>
__global__ void arrange_q_kernel(const uint8_t* src, int world, int64_t tokens, int heads, uint8_t* dst,
                                 const float* q_scale, int64_t rows) {
  constexpr int kChunks = K * InBytes / 16;
  constexpr int kOutRow = Quantize ? K : K * InBytes;
  constexpr int kOutChunk = Quantize ? 8 : 16;
  const float scale = Quantize ? __ldg(q_scale) : 1.0f;
  const int64_t items = rows * kChunks;
  for (int64_t i = grid_index(); i < items; i += grid_threads()) {
    const int64_t row = i / kChunks;  // source row (r, t, n)
    const int c = static_cast<int>(i - row * kChunks);
    const int64_t n = row % heads, t = (row / heads) % tokens, r = row / (static_cast<int64_t>(heads) * tokens);
    const int64_t out_row = (t * world + r) * heads + n;
    const uint4 v = load_bytes<16, true>(src + row * (K * InBytes) + c * 16);
    uint8_t* d = dst + out_row * kOutRow + c * kOutChunk;
    if constexpr (Quantize) store_bytes<8, true>(d, quantize8(v, scale));
    else store_bytes<16, true>(d, v);
  }
}

void arrange_q(const void* src, DType src_dtype, int world, int64_t tokens, int heads, void* dst, bool quantize,
               const float* q_scale, Stream stream) {
  const int64_t rows = static_cast<int64_t>(world) * tokens * heads;
  if (rows == 0) return;
  const auto* s = static_cast<const uint8_t*>(src);
  auto* d = static_cast<uint8_t*>(dst);
  const bool bf16 = src_dtype == DType::bf16;
  const dim3 grid(blocks_for(rows * (bf16 ? 72 : 36)));
  auto launch = [&](auto kernel) {
    kernel<<<grid, kThreads, 0, to_cuda(stream)>>>(s, world, tokens, heads, d, q_scale, rows);
  };
  if (!bf16) launch(arrange_q_kernel<1, false>);  // already e4m3: a permutation
  else if (quantize) launch(arrange_q_kernel<2, true>);
  else launch(arrange_q_kernel<2, false>);
  check_launch("dcp arrange_q");
}

// ---- merge (a): all-gather LSEs, rescale, reduce-scatter ----------------------------------------

constexpr int kF4 = D / 4;  // float4 chunks of one output row: 128

__global__ void rescale_partials_kernel(const float* o_partial, const float* lse_all, int world, int rank,
                                        int64_t tokens, int heads, float* dst, int64_t rows) {
  const int64_t WN = static_cast<int64_t>(world) * heads;
  const std::size_t rank_stride = static_cast<std::size_t>(tokens * WN);
  const int64_t items = rows * kF4;
  for (int64_t i = grid_index(); i < items; i += grid_threads()) {
    const int64_t row = i / kF4;  // destination row (d, t, n)
    const int c = static_cast<int>(i - row * kF4);
    const int64_t n = row % heads, t = (row / heads) % tokens, d = row / (static_cast<int64_t>(heads) * tokens);
    const int64_t h = t * WN + d * heads + n;
    const MergeStats st = merge_stats(lse_all + h, world, rank_stride);
    const float w = merge_weight(st, lse_all[rank * rank_stride + h]);
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (w != 0.0f) {
      v = __ldg(reinterpret_cast<const float4*>(o_partial + h * D) + c);
      v = make_float4(w * v.x, w * v.y, w * v.z, w * v.w);
    }
    reinterpret_cast<float4*>(dst + row * D)[c] = v;
  }
}

void rescale_partials(const float* o_partial, const float* lse_all, int world, int rank, int64_t tokens, int heads,
                      float* dst, Stream stream) {
  const int64_t rows = static_cast<int64_t>(world) * tokens * heads;
  if (rows == 0) return;
  rescale_partials_kernel<<<blocks_for(rows * kF4), kThreads, 0, to_cuda(stream)>>>(o_partial, lse_all, world, rank,
                                                                                     tokens, heads, dst, rows);
  check_launch("dcp rescale_partials");
}

// The output and lse views of [B, s_q, N, ...] tensors, addressed by query row t = b·s_q + i.
struct OutView {
  void* out;
  int64_t o0, o1, o2;  // elements
  float* lse;
  int64_t l0, l1, l2;
  int64_t s_q;

  __device__ __forceinline__ int64_t out_offset(int64_t t, int64_t n) const {
    return (t / s_q) * o0 + (t % s_q) * o1 + n * o2;
  }
  __device__ __forceinline__ float* lse_at(int64_t t, int64_t n) const {
    return lse + (t / s_q) * l0 + (t % s_q) * l1 + n * l2;
  }
};

OutView out_view(const Tensor& out, const Tensor& lse) {
  return {out.data, out.stride[0], out.stride[1], out.stride[2], lse.ptr<float>(), lse.stride[0], lse.stride[1],
          lse.stride[2], out.shape[1]};
}

template <bool F32> __device__ __forceinline__ void* out_elem(const OutView& v, int64_t off) {
  if constexpr (F32) return static_cast<float*>(v.out) + off;
  else return static_cast<uint16_t*>(v.out) + off;
}

template <bool F32, bool Vec>
__global__ void finish_reduce_scatter_kernel(const float* o_sum, const float* lse_all, int world, int rank,
                                             int64_t tokens, int heads, OutView view) {
  const int64_t WN = static_cast<int64_t>(world) * heads;
  const std::size_t rank_stride = static_cast<std::size_t>(tokens * WN);
  const int64_t rows = tokens * heads, items = rows * kF4;
  for (int64_t i = grid_index(); i < items; i += grid_threads()) {
    const int64_t row = i / kF4;  // (t, n)
    const int c = static_cast<int>(i - row * kF4);
    const int64_t n = row % heads, t = row / heads;
    const float4 v = __ldg(reinterpret_cast<const float4*>(o_sum + row * D) + c);
    const float vals[4] = {v.x, v.y, v.z, v.w};
    store_values<4, F32, Vec>(out_elem<F32>(view, view.out_offset(t, n) + 4 * c), vals);
    if (c == 0) *view.lse_at(t, n) = merge_stats(lse_all + t * WN + rank * heads + n, world, rank_stride).lse;
  }
}

void finish_reduce_scatter(const float* o_sum, const float* lse_all, int world, int rank, int64_t tokens, int heads,
                           const Tensor& out, const Tensor& lse, Stream stream) {
  const int64_t rows = tokens * heads;
  if (rows == 0) return;
  cuda::set_device(out.device);
  const bool f32 = out.dtype == DType::f32;
  const bool vec = rows_aligned(out, 3, f32 ? 16 : 8);
  const OutView view = out_view(out, lse);
  const dim3 grid(blocks_for(rows * kF4));
  auto launch = [&](auto kernel) {
    kernel<<<grid, kThreads, 0, to_cuda(stream)>>>(o_sum, lse_all, world, rank, tokens, heads, view);
  };
  if (f32) vec ? launch(finish_reduce_scatter_kernel<true, true>) : launch(finish_reduce_scatter_kernel<true, false>);
  else vec ? launch(finish_reduce_scatter_kernel<false, true>) : launch(finish_reduce_scatter_kernel<false, false>);
  check_launch("dcp finish_reduce_scatter");
}

// ---- merge (b): one packed all-to-all, then a local merge ---------------------------------------

// A destination block holds T·N·513 floats, so blocks after the first are 16-byte aligned only
// when T·N is a multiple of 4: V = 4 floats per item then, else 1.
template <int V>
__global__ void pack_partials_kernel(const float* o_partial, const float* lse_partial, int world, int64_t tokens,
                                     int heads, float* dst) {
  constexpr int kChunks = D / V;
  const int64_t TN = tokens * heads, WN = static_cast<int64_t>(world) * heads;
  const std::size_t block = static_cast<std::size_t>(TN) * (D + 1);  // packed_floats(tokens, heads)
  const int64_t items = world * TN * kChunks;
  for (int64_t i = grid_index(); i < items; i += grid_threads()) {
    const int64_t row = i / kChunks;  // (d, t, n)
    const int c = static_cast<int>(i - row * kChunks);
    const int64_t tn = row % TN, d = row / TN;
    const int64_t n = tn % heads, t = tn / heads;
    const int64_t src = t * WN + d * heads + n;
    float* blk = dst + d * block;
    if constexpr (V == 4) {
      reinterpret_cast<float4*>(blk + tn * D)[c] = __ldg(reinterpret_cast<const float4*>(o_partial + src * D) + c);
    } else {
      blk[tn * D + c] = __ldg(o_partial + src * D + c);
    }
    if (c == 0) blk[TN * D + tn] = __ldg(lse_partial + src);
  }
}

void pack_partials(const float* o_partial, const float* lse_partial, int world, int64_t tokens, int heads, float* dst,
                   Stream stream) {
  const int64_t TN = tokens * heads;
  if (TN == 0) return;
  const bool vec = TN % 4 == 0 && aligned(dst, 16);
  const int64_t items = world * TN * (vec ? D / 4 : D);
  if (vec)
    pack_partials_kernel<4><<<blocks_for(items), kThreads, 0, to_cuda(stream)>>>(o_partial, lse_partial, world, tokens,
                                                                                  heads, dst);
  else
    pack_partials_kernel<1><<<blocks_for(items), kThreads, 0, to_cuda(stream)>>>(o_partial, lse_partial, world, tokens,
                                                                                  heads, dst);
  check_launch("dcp pack_partials");
}

template <int V, bool F32, bool Vec>
__global__ void merge_packed_kernel(const float* recv, int world, int64_t tokens, int heads, OutView view) {
  constexpr int kChunks = D / V;
  const int64_t TN = tokens * heads;
  const std::size_t block = static_cast<std::size_t>(TN) * (D + 1);  // packed_floats(tokens, heads)
  const int64_t items = TN * kChunks;
  for (int64_t i = grid_index(); i < items; i += grid_threads()) {
    const int64_t tn = i / kChunks;
    const int c = static_cast<int>(i - tn * kChunks);
    const float* lse = recv + TN * D + tn;
    const MergeStats st = merge_stats(lse, world, block);
    float acc[V] = {};
    for (int s = 0; s < world; ++s) {
      const float w = merge_weight(st, lse[s * block]);
      if (w == 0.0f) continue;  // an empty partial may hold anything
      const float* o = recv + s * block + tn * D + c * V;
      if constexpr (V == 4) {
        const float4 v = __ldg(reinterpret_cast<const float4*>(o));
        acc[0] += w * v.x;
        acc[1] += w * v.y;
        acc[2] += w * v.z;
        acc[3] += w * v.w;
      } else {
        acc[0] += w * __ldg(o);
      }
    }
    const int64_t t = tn / heads, n = tn % heads;
    void* p = out_elem<F32>(view, view.out_offset(t, n) + c * V);
    if constexpr (V == 4) store_values<4, F32, Vec>(p, acc);
    else store_value<F32>(p, acc[0]);
    if (c == 0) *view.lse_at(t, n) = st.lse;
  }
}

void merge_packed(const float* recv, int world, int64_t tokens, int heads, const Tensor& out, const Tensor& lse,
                  Stream stream) {
  const int64_t TN = tokens * heads;
  if (TN == 0) return;
  cuda::set_device(out.device);
  const bool f32 = out.dtype == DType::f32;
  const bool in_vec = TN % 4 == 0 && aligned(recv, 16);
  const bool out_vec = rows_aligned(out, 3, f32 ? 16 : 8);
  const OutView view = out_view(out, lse);
  const dim3 grid(blocks_for(TN * (in_vec ? D / 4 : D)));
  auto launch = [&](auto kernel) { kernel<<<grid, kThreads, 0, to_cuda(stream)>>>(recv, world, tokens, heads, view); };
  if (in_vec) {
    if (f32) out_vec ? launch(merge_packed_kernel<4, true, true>) : launch(merge_packed_kernel<4, true, false>);
    else out_vec ? launch(merge_packed_kernel<4, false, true>) : launch(merge_packed_kernel<4, false, false>);
  } else {
    f32 ? launch(merge_packed_kernel<1, true, false>) : launch(merge_packed_kernel<1, false, false>);
  }
  check_launch("dcp merge_packed");
}

// ---- context gather -----------------------------------------------------------------------------

constexpr int kScanThreads = 1024;

// Inclusive scan of one value per thread over the block; `total` gets the block's sum.
__device__ int block_inclusive_scan(int v, int& total) {
  __shared__ int warp_sums[kScanThreads / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int d = 1; d < 32; d *= 2) {
    const int u = __shfl_up_sync(0xffffffffu, v, d);
    if (lane >= d) v += u;
  }
  if (lane == 31) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    int s = lane < kScanThreads / 32 ? warp_sums[lane] : 0;
#pragma unroll
    for (int d = 1; d < 32; d *= 2) {
      const int u = __shfl_up_sync(0xffffffffu, s, d);
      if (lane >= d) s += u;
    }
    warp_sums[lane] = s;
  }
  __syncthreads();
  if (warp > 0) v += warp_sums[warp - 1];
  total = warp_sums[kScanThreads / 32 - 1];
  __syncthreads();  // warp_sums is reused by the next call
  return v;
}

__global__ void context_offsets_kernel(dev::IndexVec cu, int64_t batch, int world, int interleave, int32_t* offsets) {
  for (int r = 0; r < world; ++r) {
    int32_t* o = offsets + static_cast<int64_t>(r) * (batch + 1);
    if (threadIdx.x == 0) o[0] = 0;
    int carry = 0;
    for (int64_t base = 0; base < batch; base += kScanThreads) {
      const int64_t b = base + threadIdx.x;
      int v = 0;
      if (b < batch) {
        const int64_t len = cu[b + 1] - cu[b];
        v = static_cast<int>(local_length_of(len < 0 ? 0 : len, r, world, interleave));
      }
      int total = 0;
      const int incl = block_inclusive_scan(v, total);
      if (b < batch) o[b + 1] = carry + incl;
      carry += total;
    }
  }
}

dev::IndexVec index_vec(const Tensor& t) { return {t.data, t.stride[0], t.dtype == DType::i64}; }

void context_offsets(const Tensor& cu_seq_lens, int world, int interleave, int32_t* offsets, Stream stream) {
  const int64_t batch = cu_seq_lens.shape[0] - 1;
  if (batch < 0) return;
  cuda::set_device(cu_seq_lens.device);
  context_offsets_kernel<<<1, kScanThreads, 0, to_cuda(stream)>>>(index_vec(cu_seq_lens), batch, world, interleave,
                                                                  offsets);
  check_launch("dcp context_offsets");
}

// Largest i in [0, n) with v[i] <= x, for non-decreasing v[0] <= x (garbage gives some i < n).
template <class Get> __device__ __forceinline__ int64_t upper_index(Get v, int64_t n, int64_t x) {
  int64_t lo = 0, hi = n;  // v[lo] <= x; answer in [lo, hi)
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) / 2;
    if (v(mid) <= x) lo = mid;
    else hi = mid;
  }
  return lo;
}

// The cache as pack_context reads it.
struct CacheView {
  const uint8_t* base;
  int64_t stride;  // bytes per block
  int64_t num_blocks;
  int block_size;
  int token_bytes;
};

// Splits a flat item index into (row, chunk): 32-bit division when the count allows (a 64-bit
// one is a long software sequence, paid once per 8 or 16 bytes moved here).
__device__ __forceinline__ void split_item(int64_t it, int chunks, bool small, int64_t& row, int& c) {
  if (small) {
    const uint32_t u = static_cast<uint32_t>(it), q = u / static_cast<uint32_t>(chunks);
    row = q;
    c = static_cast<int>(u - q * static_cast<uint32_t>(chunks));
  } else {
    row = it / chunks;
    c = static_cast<int>(it - row * chunks);
  }
}

// One thread per chunk of a packed row, so that short rows (36 chunks for fp8) keep every lane
// busy. Chunk: 16 bytes (bf16, fp8, fp8_ds_mla: every token and row starts 16-aligned) or 8
// bytes (dsv4: 584-byte packed rows; the scale bytes are chunk 72).
template <int V, bool Dsv4, bool SrcAligned, bool DstAligned>
__global__ void pack_context_kernel(CacheView cache, const int32_t* table, int64_t table_stride, int64_t max_blocks,
                                    dev::IndexVec seq_starts, int64_t batch, int world, const int32_t* mine,
                                    uint8_t* dst, int64_t capacity) {
  const int64_t rows = min(static_cast<int64_t>(__ldg(mine + batch)), capacity);
  const int chunks = cache.token_bytes / V;
  const int64_t items = rows * chunks;
  const bool small = items < (int64_t{1} << 31);
  for (int64_t it = grid_index(); it < items; it += grid_threads()) {
    int64_t row;
    int c;
    split_item(it, chunks, small, row, c);
    const int64_t b = upper_index([&](int64_t i) { return static_cast<int64_t>(__ldg(mine + i)); }, batch, row);
    const int64_t start = seq_starts[b];
    if (start < 0) continue;
    const int64_t j = start / world + (row - __ldg(mine + b));
    if (j < 0) continue;  // offsets from garbage device lengths
    const int64_t col = j / cache.block_size;
    if (col >= max_blocks) continue;
    const int64_t id = __ldg(table + b * table_stride + col);
    if (id < 0 || id >= cache.num_blocks) continue;
    const int64_t k = j - col * cache.block_size;
    const uint8_t* blk = cache.base + id * cache.stride;
    const uint8_t* src;
    if constexpr (Dsv4) {
      src = c < 72 ? blk + k * 576 + c * 8 : blk + static_cast<int64_t>(cache.block_size) * 576 + k * 8;
    } else {
      src = blk + k * cache.token_bytes + c * V;
    }
    store_bytes<V, DstAligned>(dst + row * cache.token_bytes + c * V, load_bytes<V, SrcAligned>(src));
  }
}

void pack_context(const Cache& cache, const Tensor& block_table, const Tensor& /*cu_seq_lens: in offsets*/,
                  const Tensor& seq_starts, DcpShard shard, const int32_t* offsets, uint8_t* dst, int64_t capacity,
                  Stream stream) {
  const int64_t batch = seq_starts.shape[0];
  if (batch == 0) return;
  cuda::set_device(cache.device);
  const CacheDesc& d = cache.desc;
  const bool dsv4 = d.format == CacheFormat::dsv4;
  const std::size_t v = dsv4 ? 8 : 16;
  const CacheView view{static_cast<const uint8_t*>(cache.data), d.stride_bytes(), d.num_blocks, d.block_size,
                       static_cast<int>(d.token_bytes())};
  const bool src_al = aligned(cache.data, v) && d.stride_bytes() % static_cast<int64_t>(v) == 0;
  const bool dst_al = aligned(dst, v);
  const int32_t* mine = offsets + static_cast<int64_t>(shard.rank) * (batch + 1);
  // The row count is on the device: one wave of warps walks them grid-stride.
  const int blocks = cuda::sm_count(cache.device.index) * 8;
  auto launch = [&](auto kernel) {
    kernel<<<blocks, kThreads, 0, to_cuda(stream)>>>(view, block_table.ptr<const int32_t>(), block_table.stride[0],
                                                     block_table.shape[1], index_vec(seq_starts), batch, shard.world,
                                                     mine, dst, capacity);
  };
  if (dsv4) {
    if (src_al) dst_al ? launch(pack_context_kernel<8, true, true, true>) : launch(pack_context_kernel<8, true, true, false>);
    else dst_al ? launch(pack_context_kernel<8, true, false, true>) : launch(pack_context_kernel<8, true, false, false>);
  } else {
    if (src_al) dst_al ? launch(pack_context_kernel<16, false, true, true>) : launch(pack_context_kernel<16, false, true, false>);
    else dst_al ? launch(pack_context_kernel<16, false, false, true>) : launch(pack_context_kernel<16, false, false, false>);
  }
  check_launch("dcp pack_context");
}

// Decodes chunks first, first + step, ... of one packed token into an output row.
template <CacheFormat F, bool F32, bool Vec>
__device__ __forceinline__ void decode_row(const uint8_t* tok, float scale, void* row, int first, int step) {
  auto at = [&](int elem) -> void* {
    if constexpr (F32) return static_cast<float*>(row) + elem;
    else return static_cast<uint16_t*>(row) + elem;
  };
  if constexpr (F == CacheFormat::bf16) {
    for (int c = first; c < 72; c += step) {
      const uint4 v = load_bytes<16, true>(tok + c * 16);
      if constexpr (F32) {
        float f[8];
#pragma unroll
        for (int w = 0; w < 4; ++w) f[2 * w] = bf16_lo(word_of(v, w)), f[2 * w + 1] = bf16_hi(word_of(v, w));
        store_values<8, true, Vec>(at(c * 8), f);
      } else {
        store_bytes<16, Vec>(at(c * 8), v);  // bf16 to bf16: the stored bits
      }
    }
  } else if constexpr (F == CacheFormat::fp8 || F == CacheFormat::fp8_ds_mla) {
    constexpr int kLatentChunks = F == CacheFormat::fp8 ? 36 : 32;  // 16 e4m3 each
    constexpr int kChunks = kLatentChunks + (F == CacheFormat::fp8 ? 0 : 8);
    for (int c = first; c < kChunks; c += step) {
      if (c < kLatentChunks) {
        const float s = F == CacheFormat::fp8 ? scale : __ldg(reinterpret_cast<const float*>(tok + 512) + c / 8);
        const uint4 v = load_bytes<16, true>(tok + c * 16);
        float f[16];
#pragma unroll
        for (int w = 0; w < 4; ++w) dev::e4m3x4_to_float(word_of(v, w), f + 4 * w);
#pragma unroll
        for (int i = 0; i < 16; ++i) f[i] *= s;
        store_values<16, F32, Vec>(at(c * 16), f);
      } else {  // fp8_ds_mla rope: 8 bf16 per chunk, not quantized
        const int r = c - kLatentChunks;
        const uint4 v = load_bytes<16, true>(tok + 528 + r * 16);
        if constexpr (F32) {
          float f[8];
#pragma unroll
          for (int w = 0; w < 4; ++w) f[2 * w] = bf16_lo(word_of(v, w)), f[2 * w + 1] = bf16_hi(word_of(v, w));
          store_values<8, true, Vec>(at(512 + r * 8), f);
        } else {
          store_bytes<16, Vec>(at(512 + r * 8), v);
        }
      }
    }
  } else {  // dsv4: 8-byte chunks (packed rows are 584 bytes); 56 of e4m3, 16 of bf16 rope
    for (int c = first; c < 72; c += step) {
      const uint2 v = load_bytes<8, true>(tok + c * 8);
      if (c < 56) {
        const float s = ue8m0(__ldg(tok + 576 + c / 8));
        float f[8];
        dev::e4m3x4_to_float(v.x, f);
        dev::e4m3x4_to_float(v.y, f + 4);
#pragma unroll
        for (int i = 0; i < 8; ++i) f[i] *= s;
        store_values<8, F32, Vec>(at(c * 8), f);
      } else {
        const int e = 448 + (c - 56) * 4;
        if constexpr (F32) {
          const float f[4] = {bf16_lo(v.x), bf16_hi(v.x), bf16_lo(v.y), bf16_hi(v.y)};
          store_values<4, true, Vec>(at(e), f);
        } else {
          store_bytes<8, Vec>(at(e), v);
        }
      }
    }
  }
}

// Chunks a packed row of format F decodes in: 16 bytes (8 for dsv4's 584-byte rows).
template <CacheFormat F> constexpr int unpack_chunks() {
  return F == CacheFormat::bf16 ? 72 : F == CacheFormat::fp8 ? 36 : F == CacheFormat::fp8_ds_mla ? 40 : 72;
}

// One thread per chunk of an output row: find the row's request, its owner rank and the packed
// row there.
template <CacheFormat F, bool F32, bool Vec>
__global__ void unpack_context_kernel(const uint8_t* recv, int64_t capacity, const float* scale_ptr,
                                      dev::IndexVec cu, int64_t batch, int world, int interleave,
                                      const int32_t* offsets, void* out, int64_t out_stride, int64_t out_rows) {
  constexpr int64_t kTokenBytes = F == CacheFormat::bf16 ? 1152 : F == CacheFormat::fp8 ? 576
                                  : F == CacheFormat::fp8_ds_mla ? 656 : 584;
  constexpr int kChunks = unpack_chunks<F>();
  const float scale = F == CacheFormat::fp8 ? __ldg(scale_ptr) : 1.0f;
  const int64_t first = cu[0], items = out_rows * kChunks;
  const bool small = items < (int64_t{1} << 31);
  for (int64_t it = grid_index(); it < items; it += grid_threads()) {
    int64_t o;
    int c;
    split_item(it, kChunks, small, o, c);
    if (o < first) continue;
    const int64_t b = upper_index([&](int64_t i) { return cu[i]; }, batch + 1, o);
    if (b >= batch) continue;  // past the last chunk
    const int64_t lo = cu[b];
    if (o < lo || o >= cu[b + 1]) continue;  // non-monotone garbage
    const int64_t p = o - lo;
    const int r = owner_of(p, world, interleave);
    const int64_t src = __ldg(offsets + r * (batch + 1) + b) + local_index_of(p, world, interleave);
    if (src < 0 || src >= capacity) continue;
    const uint8_t* tok = recv + (r * capacity + src) * kTokenBytes;
    void* row = F32 ? static_cast<void*>(static_cast<float*>(out) + o * out_stride)
                    : static_cast<void*>(static_cast<uint16_t*>(out) + o * out_stride);
    decode_row<F, F32, Vec>(tok, scale, row, c, kChunks);
  }
}

template <CacheFormat F>
void launch_unpack(const uint8_t* recv, int64_t capacity, const float* scale, const Tensor& cu_seq_lens, int world,
                   int interleave, const int32_t* offsets, const Tensor& out, cudaStream_t stream) {
  const int64_t batch = cu_seq_lens.shape[0] - 1, rows = out.shape[0];
  const bool f32 = out.dtype == DType::f32;
  const bool vec = rows_aligned(out, 1, 16);
  const unsigned blocks = blocks_for(rows * unpack_chunks<F>());
  auto launch = [&](auto kernel) {
    kernel<<<blocks, kThreads, 0, stream>>>(recv, capacity, scale, index_vec(cu_seq_lens), batch, world, interleave,
                                            offsets, out.data, out.stride[0], rows);
  };
  if (f32) vec ? launch(unpack_context_kernel<F, true, true>) : launch(unpack_context_kernel<F, true, false>);
  else vec ? launch(unpack_context_kernel<F, false, true>) : launch(unpack_context_kernel<F, false, false>);
}

void unpack_context(const uint8_t* recv, int64_t capacity, CacheFormat format, const float* scale,
                    const Tensor& cu_seq_lens, int world, int interleave, const int32_t* offsets, const Tensor& out,
                    Stream stream) {
  if (cu_seq_lens.shape[0] <= 1 || out.shape[0] == 0) return;
  cuda::set_device(out.device);
  const cudaStream_t s = to_cuda(stream);
  switch (format) {
    case CacheFormat::bf16:
      launch_unpack<CacheFormat::bf16>(recv, capacity, scale, cu_seq_lens, world, interleave, offsets, out, s);
      break;
    case CacheFormat::fp8:
      launch_unpack<CacheFormat::fp8>(recv, capacity, scale, cu_seq_lens, world, interleave, offsets, out, s);
      break;
    case CacheFormat::fp8_ds_mla:
      launch_unpack<CacheFormat::fp8_ds_mla>(recv, capacity, scale, cu_seq_lens, world, interleave, offsets, out, s);
      break;
    case CacheFormat::dsv4:
      launch_unpack<CacheFormat::dsv4>(recv, capacity, scale, cu_seq_lens, world, interleave, offsets, out, s);
      break;
  }
  check_launch("dcp unpack_context");
}

}  // namespace

const Kernels& cuda_kernels() {
  static const Kernels k{slot_mapping,  pack_q,       arrange_q,       rescale_partials, finish_reduce_scatter,
                         pack_partials, merge_packed, context_offsets, pack_context,     unpack_context};
  return k;
}

}  // namespace mlakv::dcp::ops
