// Ops 2 and 3 on the GPU: gather_cache (raw bytes) and gather_dequant_cache.
//
// Output rows are cut into warp tiles of a few consecutive rows and the grid strides over all
// tiles (sized from the number of output rows, not per request), so one 32000-token request
// fills the chip as well as 128 requests of 8192. Lane j of a warp resolves row j: its sequence
// (token_to_seq, or a binary search over cu_seq_lens), its position and its block-table entry;
// the tile's rows then move as chunks of 16 output bytes spread over all 32 lanes, every lane
// issuing all of its loads before its first store.
//
// Device-side indices the host never saw (cu_seq_lens, seq_starts, token_to_seq, block-table
// entries) are bounds-checked: a row whose sequence, position or physical block falls outside the
// tensors is skipped, its output left untouched.
#include <algorithm>

#include "backend.hpp"
#include "device_common.cuh"
#include "runtime.hpp"

namespace mlakv::cuda {
namespace {

constexpr int kThreads = 128;

struct GatherParams {
  dev::Paged cache;
  dev::BlockTable bt;
  dev::IndexVec cu;            // [B + 1]
  int64_t batch;               // B
  dev::IndexVec seq_starts;    // optional
  dev::IndexVec token_to_seq;  // optional
  uint8_t* dst;
  int64_t dst_stride;  // bytes between rows
  int64_t dst_rows;
  int64_t tiles;
  const float* scale;  // fp8 per-tensor scale (device), else null
};

/// Lane's row `row`: physical block (-1: skip) and index in block.
__device__ __forceinline__ void resolve_row(const GatherParams& p, int64_t row, int& blk, int& k) {
  blk = -1;
  k = 0;
  if (row >= p.dst_rows) return;
  int64_t b;
  if (p.token_to_seq.present()) {
    b = p.token_to_seq[row];
    if (b < 0 || b >= p.batch || row < p.cu[0] || row >= p.cu[p.batch]) return;
  } else {
    // Last b with cu[b] <= row; rows before cu[0] or from cu[B] on belong to no sequence.
    if (p.cu[0] > row) return;
    int64_t lo = 0, hi = p.batch;
    while (lo < hi) {
      const int64_t mid = (lo + hi + 1) >> 1;
      if (p.cu[mid] <= row) lo = mid;
      else hi = mid - 1;
    }
    if (lo >= p.batch) return;
    b = lo;
  }
  const int64_t pos = (p.seq_starts.present() ? p.seq_starts[b] : 0) + row - p.cu[b];
  if (pos < 0) return;
  int64_t col;
  dev::divmod_pos(pos, p.cache.block_size, col, k);
  const int64_t phys = p.bt.at(b, col);
  if (p.cache.valid_block(phys)) blk = static_cast<int>(phys);
}

template <CacheFormat F, class Out, int kRows, bool A>
__global__ void __launch_bounds__(kThreads, 5) gather_dequant_kernel(const GatherParams p) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) >> 5;
  const int64_t nwarps = (static_cast<int64_t>(gridDim.x) * kThreads) >> 5;
  const float tensor_scale = F == CacheFormat::fp8 ? __ldg(p.scale) : 1.0f;
  dev::TileInFlight<F, Out, kRows, A> tile;
  int blk = -1, k = 0;
  if (warp < p.tiles && lane < kRows) resolve_row(p, warp * kRows + lane, blk, k);
  for (int64_t t = warp; t < p.tiles; t += nwarps) {
    tile.load(p.cache, blk, k);
    blk = -1, k = 0;
    if (t + nwarps < p.tiles && lane < kRows) resolve_row(p, (t + nwarps) * kRows + lane, blk, k);
    tile.store(p.dst + t * kRows * p.dst_stride, p.dst_stride, tensor_scale);
  }
}

/// Rows per warp tile of the raw copy: about 144 bytes in flight per lane, at most 36 items a lane.
constexpr int raw_rows(int items, int v) {
  const int want = std::min(288 * 16 / v, 1152);
  return items >= want ? 1 : std::min(32, want / items);
}

/// Raw copy: V-byte items (V divides every address and stride involved).
template <CacheFormat F, int V>
__global__ void __launch_bounds__(kThreads, 4) gather_raw_kernel(const GatherParams p) {
  constexpr int kTok = F == CacheFormat::bf16 ? 1152 : F == CacheFormat::fp8 ? 576 : F == CacheFormat::fp8_ds_mla ? 656 : 584;
  constexpr int kData = F == CacheFormat::dsv4 ? 576 : kTok;  // dsv4: 576 data bytes, then 8 scale bytes elsewhere
  constexpr int kItems = kTok / V, kDataItems = kData / V;
  constexpr int kRows = raw_rows(kTok / V, V);
  constexpr int kTileItems = kRows * kItems;
  constexpr int U = (kTileItems + 31) / 32;
  static_assert(kTok % V == 0 && kData % V == 0);
  const int lane = threadIdx.x & 31;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) >> 5;
  const int64_t nwarps = (static_cast<int64_t>(gridDim.x) * kThreads) >> 5;
  const int64_t tiles = (p.dst_rows + kRows - 1) / kRows;
  int my_blk = -1, my_k = 0;
  if (warp < tiles && lane < kRows) resolve_row(p, warp * kRows + lane, my_blk, my_k);
  for (int64_t t = warp; t < tiles; t += nwarps) {
    const int64_t row0 = t * kRows;
    dev::Vec<V> v[U];
    int blk[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int item = u * 32 + lane;
      const int r = item / kItems, c = item - r * kItems;
      blk[u] = __shfl_sync(0xffffffffu, my_blk, r & 31);
      const int k = __shfl_sync(0xffffffffu, my_k, r & 31);
      if (item >= kTileItems) blk[u] = -1;
      if (blk[u] >= 0) {
        const uint8_t* block = p.cache.block(blk[u]);
        const uint8_t* src = c < kDataItems
                                 ? block + static_cast<int64_t>(kData) * k + V * c
                                 : block + static_cast<int64_t>(kData) * p.cache.block_size + 8 * k + V * (c - kDataItems);
        v[u] = dev::load<V, true>(src);
      }
    }
    // The next tile's lookups wait under this tile's loads.
    my_blk = -1, my_k = 0;
    if (t + nwarps < tiles && lane < kRows) resolve_row(p, (t + nwarps) * kRows + lane, my_blk, my_k);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int item = u * 32 + lane;
      const int r = item / kItems, c = item - r * kItems;
      if (blk[u] >= 0) dev::store<V, true>(p.dst + (row0 + r) * p.dst_stride + V * c, v[u]);
    }
  }
}

template <auto Kernel> void launch(const GatherParams& p, int64_t tiles, int sms, cudaStream_t stream) {
  const int grid = persistent_grid<Kernel>(kThreads, (tiles + kThreads / 32 - 1) / (kThreads / 32), sms);
  Kernel<<<grid, kThreads, 0, stream>>>(p);
  check_launch("gather kernel");
}

template <CacheFormat F, class Out, int RW, bool A> void run_dequant(GatherParams p, int sms, cudaStream_t s) {
  p.tiles = (p.dst_rows + RW - 1) / RW;
  launch<gather_dequant_kernel<F, Out, RW, A>>(p, p.tiles, sms, s);
}

template <CacheFormat F, class Out, bool A> void launch_dequant(const GatherParams& p, int sms, cudaStream_t s) {
  constexpr int R = dev::kTileRows<dev::RowCodec<F, Out>>;
  if constexpr (A) {  // smaller tiles where they balance the last round better (aligned views only)
    const int64_t warps = int64_t{blocks_per_sm<gather_dequant_kernel<F, Out, R, A>>(kThreads)} * sms * (kThreads / 32);
    const int rw = balanced_tile_rows(R, warps, [&](int rw) { return (p.dst_rows + rw - 1) / rw; });
    if (rw == 1) return run_dequant<F, Out, 1, A>(p, sms, s);
    if constexpr (R / 2 > 1)
      if (rw == R / 2) return run_dequant<F, Out, R / 2, A>(p, sms, s);
  }
  run_dequant<F, Out, R, A>(p, sms, s);
}

template <class Out, bool A> void dispatch_dequant(CacheFormat f, const GatherParams& p, int sms, cudaStream_t s) {
  switch (f) {
    case CacheFormat::bf16: return launch_dequant<CacheFormat::bf16, Out, A>(p, sms, s);
    case CacheFormat::fp8: return launch_dequant<CacheFormat::fp8, Out, A>(p, sms, s);
    case CacheFormat::fp8_ds_mla: return launch_dequant<CacheFormat::fp8_ds_mla, Out, A>(p, sms, s);
    case CacheFormat::dsv4: return launch_dequant<CacheFormat::dsv4, Out, A>(p, sms, s);
  }
}

template <CacheFormat F> void dispatch_raw(int v, const GatherParams& p, int sms, cudaStream_t s) {
  constexpr int kTok = F == CacheFormat::bf16 ? 1152 : F == CacheFormat::fp8 ? 576 : F == CacheFormat::fp8_ds_mla ? 656 : 584;
  auto tiles = [&](int items) {
    const int rows = raw_rows(items, items == kTok ? 1 : kTok / items);
    return (p.dst_rows + rows - 1) / rows;
  };
  if constexpr (F != CacheFormat::dsv4) {
    if (v == 16) return launch<gather_raw_kernel<F, 16>>(p, tiles(kTok / 16), sms, s);
  }
  if (v >= 8) return launch<gather_raw_kernel<F, 8>>(p, tiles(kTok / 8), sms, s);
  launch<gather_raw_kernel<F, 1>>(p, tiles(kTok), sms, s);
}

// Fills the addressing shared by both ops; false when there is nothing to do.
bool make_params(const Cache& cache, const Tensor& block_table, const Tensor& cu_seq_lens, const Tensor& dst,
                 const GatherOptions& opts, GatherParams& p) {
  p = {};
  p.batch = cu_seq_lens.size(0) - 1;
  p.dst_rows = dst.size(0);
  if (p.batch <= 0 || p.dst_rows == 0 || cache.desc.num_blocks == 0 || block_table.size(1) == 0) return false;
  p.cache = {static_cast<uint8_t*>(cache.data), cache.desc.stride_bytes(), cache.desc.num_blocks, cache.desc.block_size};
  p.bt = {static_cast<const int32_t*>(block_table.data), block_table.stride[0], block_table.stride[1], block_table.size(1)};
  p.cu = {cu_seq_lens.data, cu_seq_lens.stride[0], cu_seq_lens.dtype == DType::i64};
  if (opts.seq_starts)
    p.seq_starts = {opts.seq_starts->data, opts.seq_starts->stride[0], opts.seq_starts->dtype == DType::i64};
  if (opts.token_to_seq)
    p.token_to_seq = {opts.token_to_seq->data, opts.token_to_seq->stride[0], opts.token_to_seq->dtype == DType::i64};
  p.dst = static_cast<uint8_t*>(dst.data);
  p.dst_stride = dst.stride[0] * static_cast<int64_t>(dtype_size(dst.dtype));
  p.scale = cache.scale;
  return true;
}

// Largest power of two (at most 16) dividing x.
int alignment_of(uint64_t x) {
  const uint64_t low = x & (~x + 1);
  return x == 0 || low >= 16 ? 16 : static_cast<int>(low);
}

}  // namespace

void gather_cache(const Cache& cache, const Tensor& block_table, const Tensor& cu_seq_lens, const Tensor& dst,
                  const GatherOptions& opts, Stream stream) {
  GatherParams p;
  if (!make_params(cache, block_table, cu_seq_lens, dst, opts, p)) return;
  // Widest access that every address involved allows.
  int v = 16;
  for (uint64_t x : {reinterpret_cast<uint64_t>(p.cache.base), static_cast<uint64_t>(p.cache.block_stride),
                     reinterpret_cast<uint64_t>(p.dst), static_cast<uint64_t>(p.dst_stride)})
    v = std::min(v, alignment_of(x));
  const int sms = sm_count(cache.device.index);
  const cudaStream_t s = to_cuda(stream);
  switch (cache.desc.format) {
    case CacheFormat::bf16: return dispatch_raw<CacheFormat::bf16>(v, p, sms, s);
    case CacheFormat::fp8: return dispatch_raw<CacheFormat::fp8>(v, p, sms, s);
    case CacheFormat::fp8_ds_mla: return dispatch_raw<CacheFormat::fp8_ds_mla>(v, p, sms, s);
    case CacheFormat::dsv4: return dispatch_raw<CacheFormat::dsv4>(v, p, sms, s);
  }
}

void gather_dequant_cache(const Cache& cache, const Tensor& block_table, const Tensor& cu_seq_lens, const Tensor& dst,
                          const GatherOptions& opts, Stream stream) {
  GatherParams p;
  if (!make_params(cache, block_table, cu_seq_lens, dst, opts, p)) return;
  const bool aligned = aligned16(p.dst) && p.dst_stride % 16 == 0 && aligned16(p.cache.base) && p.cache.block_stride % 16 == 0;
  const int sms = sm_count(cache.device.index);
  const cudaStream_t s = to_cuda(stream);
  if (dst.dtype == DType::f32) {
    aligned ? dispatch_dequant<float, true>(cache.desc.format, p, sms, s)
            : dispatch_dequant<float, false>(cache.desc.format, p, sms, s);
  } else {
    aligned ? dispatch_dequant<__nv_bfloat16, true>(cache.desc.format, p, sms, s)
            : dispatch_dequant<__nv_bfloat16, false>(cache.desc.format, p, sms, s);
  }
}

}  // namespace mlakv::cuda
