// Ops 4 and 5 on the GPU: the DeepSeek-V4 cache writer (quantize_and_insert_k_cache) and the
// dequantizing gather (dequantize_and_gather_k_cache).
#include "backend.hpp"
#include "device_common.cuh"
#include "runtime.hpp"

namespace mlakv::cuda {
namespace {

constexpr int kThreads = 128;   // writer: small CTAs, finer occupancy steps at ~80 registers a thread
constexpr int kGThreads = 128;  // gather: small CTAs so that a 2048-row gather still spreads over every SM
constexpr int kDataBytes = kDsv4QuantDim + 2 * kRopeDim;  // 576 bytes of a token in the data region

// ---------------------------------------------------------------------------------------------
// dsv4_write: one warp per row. Lane l owns values [16l, 16l+16): lanes 0..27 the 448 quantized
// values (group g = l / 4, reduced over 4 lanes), lanes 28..31 the 64 rope values. Lane 0 packs
// the 7 exponents and the zero pad byte into one 8-byte store.

struct WriteParams {
  const uint8_t* k;  // [T', 512]
  int64_t k_stride;  // bytes
  dev::IndexVec slots;
  int64_t rows;
  dev::Paged cache;
  int64_t capacity;
  bool small_capacity;
};

template <class In, bool A, int U>
__global__ void __launch_bounds__(kThreads) dsv4_write_kernel(const WriteParams p) {
  constexpr int kVecs = 16 * sizeof(In) / 16;  // 16-byte input vectors per lane
  const int lane = threadIdx.x & 31;
  uint4 in[U][kVecs];
  dev::for_each_slot_group<U>(
      p.slots, p.rows, p.capacity,
      [&](int u, int64_t row) {
        const uint8_t* src = p.k + row * p.k_stride + lane * 16 * static_cast<int>(sizeof(In));
#pragma unroll
        for (int i = 0; i < kVecs; ++i) in[u][i] = dev::load<16, A>(src + 16 * i);
      },
      [&](int u, int64_t, int64_t slot) {
        int64_t blk;
        int k;
        dev::split_slot(slot, p.cache.block_size, p.small_capacity, blk, k);
        uint8_t* block = p.cache.block(blk);
        uint8_t* data = block + static_cast<int64_t>(kDataBytes) * k;

        float x[16];
#pragma unroll
        for (int i = 0; i < kVecs; ++i)
#pragma unroll
          for (int w = 0; w < 4; ++w) {
            const uint32_t v = dev::word(in[u][i], w);
            if constexpr (sizeof(In) == 2) {
              x[8 * i + 2 * w] = dev::bf16lo(v);
              x[8 * i + 2 * w + 1] = dev::bf16hi(v);
            } else {
              x[4 * i + w] = __uint_as_float(v);
            }
          }
        float amax = 0.0f;
#pragma unroll
        for (int i = 0; i < 16; ++i) amax = fmaxf(amax, fabsf(x[i]));
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 2));
        const int e = dev::ue8m0_exponent(amax);
        const uint32_t byte = static_cast<uint32_t>(min(max(e + 127, 0), 255));
        if (lane < 28) {
          // x * 2^-e is exact (or rounds once into a subnormal, as ldexp does on the host).
          const float m = dev::exp2_neg(e);
          uint32_t q[4];
#pragma unroll
          for (int i = 0; i < 4; ++i)
            q[i] = dev::float4_to_e4m3x4(x[4 * i] * m, x[4 * i + 1] * m, x[4 * i + 2] * m, x[4 * i + 3] * m);
          dev::store<16, A>(data + 16 * lane, make_uint4(q[0], q[1], q[2], q[3]));
        } else {
          uint4 o[2];
          if constexpr (sizeof(In) == 2) {
            o[0] = in[u][0];  // bf16 rope is stored as is
            o[1] = in[u][1];
          } else {
#pragma unroll
            for (int i = 0; i < 2; ++i)
              o[i] = make_uint4(dev::float2_to_bf16x2(x[8 * i], x[8 * i + 1]), dev::float2_to_bf16x2(x[8 * i + 2], x[8 * i + 3]),
                                dev::float2_to_bf16x2(x[8 * i + 4], x[8 * i + 5]),
                                dev::float2_to_bf16x2(x[8 * i + 6], x[8 * i + 7]));
          }
          uint8_t* rope = data + kDsv4QuantDim + 32 * (lane - 28);
          dev::store<16, A>(rope, o[0]);
          dev::store<16, A>(rope + 16, o[1]);
        }
        uint32_t b[7];
#pragma unroll
        for (int g = 0; g < 7; ++g) b[g] = __shfl_sync(0xffffffffu, byte, 4 * g);
        if (lane == 0) {
          uint8_t* scales = block + static_cast<int64_t>(kDataBytes) * p.cache.block_size + 8 * k;
          dev::store<8, A>(scales, make_uint2(b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24), b[4] | (b[5] << 8) | (b[6] << 16)));
        }
      });
}

template <class In, bool A> void launch_write(const WriteParams& p, int sms, cudaStream_t stream) {
  constexpr int U = sizeof(In) == 2 ? 4 : 2;
  constexpr auto kernel = dsv4_write_kernel<In, A, U>;
  const int64_t groups = (p.rows + U - 1) / U;
  const int grid = persistent_grid<kernel>(kThreads, (groups + kThreads / 32 - 1) / (kThreads / 32), sms);
  kernel<<<grid, kThreads, 0, stream>>>(p);
  check_launch("dsv4_write_kernel");
}

// ---------------------------------------------------------------------------------------------
// dsv4_dequant_gather: the output rows of request r are cut into warp tiles of kRows rows; the
// grid strides over all tiles of all requests, so one long request fills the chip as well as
// many short ones. Lane j < kRows resolves row j (its block-table entry: one lookup per row,
// the kRows lanes' lookups coalescing into one access), then each lane moves 8 chunks of 16
// output bytes (8 e4m3 values and their scale, or 8 rope values), all loads before the first store.

constexpr int kGatherRows = dev::kTileRows<dev::RowCodec<CacheFormat::dsv4, __nv_bfloat16>>;

struct GatherParams {
  dev::Paged cache;
  dev::BlockTable bt;
  dev::IndexVec seq_lens;
  dev::IndexVec gather_lens;  // absent: gather all seq_len tokens
  uint8_t* out;
  int64_t out_stride0, out_stride1;  // bytes
  int64_t offset;
  int64_t reqs;           // requests
  int64_t span;           // max_rows - offset: rows a request may write
  int64_t tiles_per_req;  // ceil(span / kRows)
  int64_t tiles;          // num_reqs * tiles_per_req
};

// Row `lane` of tile t: its physical block (-1: none) and index in block, and the tile's first
// output row.
template <int kRows>
__device__ __forceinline__ void resolve_tile(const GatherParams& p, int64_t t, int lane, int& my_blk, int& my_k,
                                             uint8_t*& out_rows) {
  const bool has_gl = p.gather_lens.present();
  my_blk = -1;
  my_k = 0;
  int64_t r;
  int j;
  dev::divmod_pos(t, static_cast<int>(p.tiles_per_req), r, j);
  const int64_t i0 = static_cast<int64_t>(j) * kRows;
  const int64_t i = i0 + lane;
  out_rows = p.out + r * p.out_stride0 + (p.offset + i0) * p.out_stride1;
  // Without gather_lens, position i is row i: its block-table entry does not depend on
  // seq_len, so both loads go out together.
  int64_t spec_blk = -1;
  if (!has_gl && lane < kRows) {
    int64_t col;
    int k;
    dev::divmod_pos(i, p.cache.block_size, col, k);
    spec_blk = p.bt.at(r, col);
  }
  const int64_t seq_len = p.seq_lens[r];
  int64_t n = has_gl ? p.gather_lens[r] : seq_len;
  if (n > p.span) n = p.span;  // device-side lengths the host never saw stay inside `out`
  if (lane >= kRows || i >= n) return;
  const int64_t pos = seq_len - n + i;
  if (pos < 0) return;
  int64_t col;
  dev::divmod_pos(pos, p.cache.block_size, col, my_k);
  const int64_t b = has_gl ? p.bt.at(r, col) : spec_blk;
  if (p.cache.valid_block(b)) my_blk = static_cast<int>(b);
}

template <bool A, int kRows>
__global__ void __launch_bounds__(kGThreads, 5) dsv4_gather_kernel(const GatherParams p) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * kGThreads + threadIdx.x) >> 5;
  const int64_t nwarps = (static_cast<int64_t>(gridDim.x) * kGThreads) >> 5;
  dev::TileInFlight<CacheFormat::dsv4, __nv_bfloat16, kRows, A> tile;
  int blk = -1, k = 0;
  uint8_t* out_rows = nullptr;
  if (warp < p.tiles) resolve_tile<kRows>(p, warp, lane, blk, k, out_rows);
  for (int64_t t = warp; t < p.tiles; t += nwarps) {
    // This tile's loads go out first; the next tile's lookups wait under them.
    tile.load(p.cache, blk, k);
    uint8_t* rows = out_rows;
    if (t + nwarps < p.tiles) resolve_tile<kRows>(p, t + nwarps, lane, blk, k, out_rows);
    tile.store(rows, p.out_stride1, 1.0f);
  }
}

template <bool A, int RW> void run_gather(GatherParams p, int sms, cudaStream_t stream) {
  p.tiles_per_req = (p.span + RW - 1) / RW;
  p.tiles = p.reqs * p.tiles_per_req;
  constexpr auto kernel = dsv4_gather_kernel<A, RW>;
  const int grid = persistent_grid<kernel>(kGThreads, (p.tiles + kGThreads / 32 - 1) / (kGThreads / 32), sms);
  kernel<<<grid, kGThreads, 0, stream>>>(p);
  check_launch("dsv4_gather_kernel");
}

template <bool A> void launch_gather(const GatherParams& p, int sms, cudaStream_t stream) {
  constexpr int R = kGatherRows;
  if constexpr (A) {  // smaller tiles where they balance the last round better (aligned views only)
    const int64_t warps = int64_t{blocks_per_sm<dsv4_gather_kernel<A, R>>(kGThreads)} * sms * (kGThreads / 32);
    const int rw = balanced_tile_rows(R, warps, [&](int rw) { return p.reqs * ((p.span + rw - 1) / rw); });
    if (rw == 1) return run_gather<A, 1>(p, sms, stream);
    if constexpr (R / 2 > 1)
      if (rw == R / 2) return run_gather<A, R / 2>(p, sms, stream);
  }
  run_gather<A, R>(p, sms, stream);
}

}  // namespace

void dsv4_write(const Tensor& k, const Tensor& slot_mapping, const Cache& cache, Stream stream) {
  const int64_t rows = slot_mapping.size(0);
  if (rows == 0) return;
  WriteParams p{};
  p.k = static_cast<const uint8_t*>(k.data);
  p.k_stride = k.stride[0] * static_cast<int64_t>(dtype_size(k.dtype));
  p.slots = {slot_mapping.data, slot_mapping.stride[0], slot_mapping.dtype == DType::i64};
  p.rows = rows;
  p.cache = {static_cast<uint8_t*>(cache.data), cache.desc.stride_bytes(), cache.desc.num_blocks, cache.desc.block_size};
  p.capacity = cache.desc.capacity_tokens();
  p.small_capacity = p.capacity <= 0xffffffffLL;
  const bool aligned = aligned16(p.k) && p.k_stride % 16 == 0 && aligned16(p.cache.base) && p.cache.block_stride % 16 == 0;
  const int sms = sm_count(cache.device.index);
  const cudaStream_t s = to_cuda(stream);
  if (k.dtype == DType::f32) {
    aligned ? launch_write<float, true>(p, sms, s) : launch_write<float, false>(p, sms, s);
  } else {
    aligned ? launch_write<__nv_bfloat16, true>(p, sms, s) : launch_write<__nv_bfloat16, false>(p, sms, s);
  }
}

void dsv4_dequant_gather(const Cache& cache, const Tensor& block_table, const Tensor& seq_lens, const Tensor& out,
                         const std::optional<Tensor>& gather_lens, int64_t offset, Stream stream) {
  const int64_t reqs = seq_lens.size(0);
  const int64_t span = out.size(1) - offset;
  if (reqs == 0 || span <= 0 || cache.desc.num_blocks == 0 || block_table.size(1) == 0) return;
  GatherParams p{};
  p.cache = {static_cast<uint8_t*>(cache.data), cache.desc.stride_bytes(), cache.desc.num_blocks, cache.desc.block_size};
  p.bt = {static_cast<const int32_t*>(block_table.data), block_table.stride[0], block_table.stride[1], block_table.size(1)};
  p.seq_lens = {seq_lens.data, seq_lens.stride[0], seq_lens.dtype == DType::i64};
  if (gather_lens) p.gather_lens = {gather_lens->data, gather_lens->stride[0], gather_lens->dtype == DType::i64};
  p.out = static_cast<uint8_t*>(out.data);
  const int64_t es = static_cast<int64_t>(dtype_size(out.dtype));
  p.out_stride0 = out.stride[0] * es;
  p.out_stride1 = out.stride[1] * es;
  p.offset = offset;
  p.span = span;
  p.reqs = reqs;
  const bool aligned = aligned16(p.out) && p.out_stride0 % 16 == 0 && p.out_stride1 % 16 == 0 &&
                       aligned16(p.cache.base) && p.cache.block_stride % 16 == 0;
  const int sms = sm_count(cache.device.index);
  aligned ? launch_gather<true>(p, sms, to_cuda(stream)) : launch_gather<false>(p, sms, to_cuda(stream));
}

}  // namespace mlakv::cuda
