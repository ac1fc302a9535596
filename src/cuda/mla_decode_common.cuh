// Shared by the MLA decode launcher, its scheduler, main kernel and combine kernel: the split-KV
// schedule's workspace layout, the kernel arguments, and the host-side sizing rules (which must
// agree between mla_decode_workspace_size and the launcher).
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "decode_split.hpp"
#include "mlakv/format.hpp"

namespace mlakv::cuda::mla {

/// Tokens per KV tile: the unit of scheduling and of the shared-memory pipeline.
inline constexpr int kTile = 64;
/// 8 warps: each owns 8 tokens of a tile for Q·Kᵀ and 64 of the 512 output columns for P·V.
inline constexpr int kThreads = 256;
inline constexpr int kWarps = kThreads / 32;
using split::kSegmentCost;
/// Query rows (s_q · heads) per CTA: 16 or 32 (one or two m16 fragments).
inline int rows_per_cta(int rows) { return rows <= 16 ? 16 : 32; }
inline int num_mtiles(int rows) { return (rows + rows_per_cta(rows) - 1) / rows_per_cta(rows); }
/// Parts (CTAs along the KV dimension): one wave of CTAs over all row tiles.
inline int num_parts(int rows, int sms) {
  const int p = sms / num_mtiles(rows);
  return p < 1 ? 1 : p;
}

/// A row's finished softmax state (running max m in log2 units, sum l): l = 0 (nothing visible)
/// gives out 0 and lse −inf; a NaN l (some visible score was NaN: a NaN in the cache or the
/// query) gives NaN out and lse, as the reference does, instead of reading as an empty row.
__device__ __forceinline__ float row_out_factor(float l, float out_scale) { return l != 0.0f ? out_scale / l : 0.0f; }
__device__ __forceinline__ float row_lse(float m_log2, float l) {
  return l != 0.0f ? (m_log2 + __log2f(l)) * 0.69314718055994531f : -INFINITY;
}

/// Device-side schedule, all in the caller's workspace.
struct Schedule {
  int* header;      ///< [0] payload (cost units per part), [1] total cost, [2] combine list length
  int* prefix;      ///< [B+1] cost prefix over requests
  int* ntiles;      ///< [B] local tiles of each request
  int* len_local;   ///< [B] tokens of each request on this rank
  int* split_base;  ///< [B] first partial slot of a split request, -1 when written directly
  int* nsplit;      ///< [B] segments of each request
  int* list;        ///< [B] requests the combine kernel handles (split or empty), in any order
  float* part_lse;  ///< [slots, rows] natural-log LSE of each partial
  float* part_o;    ///< [slots, rows, 512] normalized partial outputs
};

struct WorkspaceLayout {
  std::size_t header, prefix, ntiles, len_local, split_base, nsplit, list, part_lse, part_o, counters, total;
};

/// Fused small-batch path (sm90 kernel only, up to kFusedMaxBatch requests): no schedule grid.
/// Each attention CTA computes the schedule itself (one warp, from seq_lens, into shared memory)
/// and writes empty requests; the combine grid, the attention grid's programmatic dependent,
/// computes the same schedule itself before it waits. With the in-grid merge (use_in_grid_merge:
/// by default where a request has about two partials) no combine grid either; the last CTAs to
/// arrive at a split request (arrival counters in the workspace) merge its partials.
/// 32: the schedule's one-warp form (a request per lane) computes it.
inline constexpr int kFusedMaxBatch = 32;
/// The in-CTA schedule in shared memory, in ints: header[4], prefix[kFusedMaxBatch + 1] (padded to
/// 16 bytes), then ntiles, len_local, split_base, nsplit and the combine's list [kFusedMaxBatch
/// each]. The attention kernel keeps all but the list (kAttnInts: its one warp writes the list
/// elsewhere, to a scratch nothing reads), which is what lets its tightest form (fp8 widened at
/// 32 rows) hold 32 requests.
struct FusedTab {
  static constexpr int kPrefix = 4, kNtiles = (kPrefix + kFusedMaxBatch + 1 + 3) / 4 * 4, kLen = kNtiles + kFusedMaxBatch,
                       kSplitBase = kLen + kFusedMaxBatch, kNsplit = kSplitBase + kFusedMaxBatch, kList = kNsplit + kFusedMaxBatch,
                       kAttnInts = kList, kInts = kList + kFusedMaxBatch;
  /// `base` (its partials) with its tables at `tab` and its list at `list`.
  __device__ __forceinline__ static Schedule at(Schedule base, int* tab, int* list) {
    base.header = tab, base.prefix = tab + kPrefix, base.ntiles = tab + kNtiles, base.len_local = tab + kLen;
    base.split_base = tab + kSplitBase, base.nsplit = tab + kNsplit, base.list = list;
    return base;
  }
};
/// In-grid merge: one arrival counter per (request, row tile), 64 bits (the call's tag, then the
/// count; row tiles: at most 8, 128 rows at 16 rows per CTA).
inline std::size_t num_counters(int batch) { return static_cast<std::size_t>(batch) * 8; }
/// In-grid merge: at most this many parts (a merging lane folds up to ⌈parts / lanes an item⌉
/// partials of each of its items; the counters' count holds any number).
inline constexpr int kMergeMaxPartials = 256;

/// Partial slots: at most 2·(parts − 1) segments belong to split requests (every split needs a
/// part boundary inside the request, and each boundary adds one segment).
inline std::size_t num_slots(int parts) { return 2 * static_cast<std::size_t>(parts); }

inline WorkspaceLayout workspace_layout(int batch, int rows, int parts) {
  auto up = [](std::size_t x) { return (x + 255) / 256 * 256; };
  WorkspaceLayout l{};
  std::size_t at = 0;
  const std::size_t b = static_cast<std::size_t>(batch);
  l.header = at; at = up(at + 4 * sizeof(int));
  l.prefix = at; at = up(at + (b + 1) * sizeof(int));
  l.ntiles = at; at = up(at + b * sizeof(int));
  l.len_local = at; at = up(at + b * sizeof(int));
  l.split_base = at; at = up(at + b * sizeof(int));
  l.nsplit = at; at = up(at + b * sizeof(int));
  l.list = at; at = up(at + b * sizeof(int));
  const std::size_t slots = num_slots(parts), r = static_cast<std::size_t>(rows);
  l.part_lse = at; at = up(at + slots * r * sizeof(float));
  l.part_o = at; at = up(at + slots * r * 512 * sizeof(float));
  l.counters = at; at = up(at + num_counters(batch) * sizeof(unsigned long long));
  l.total = at;
  return l;
}

/// The rows-as-M form's order after the other warpgroup's publication (DecodeArgs::rm_order).
enum class RmOrder : uint8_t { release, overlap, adaptive };

struct DecodeArgs {
  // q [B, s_q, H, 576]: bf16, or e4m3 with *q_scale. Strides in elements.
  const void* q;
  int64_t q_s0, q_s1, q_s2;
  bool q_e4m3;
  bool q_vec;  ///< rows 16-byte aligned: vector loads
  const float* q_scale;

  const uint8_t* cache;
  int64_t num_blocks, block_stride;  // bytes
  int block_size;
  const float* k_scale;  ///< per-tensor fp8 scale (device), else null

  const int32_t* block_table;
  int64_t bt_s0, bt_s1;
  int max_blocks;
  const int32_t* seq_lens;
  int64_t sl_s0;

  void* out;
  int64_t o_s0, o_s1, o_s2;
  bool out_f32;
  bool out_vec;  ///< pairs of output columns are 4/8-byte aligned
  float* lse;
  int64_t l_s0, l_s1, l_s2;

  int batch, s_q, heads, rows;
  float scale_log2;  ///< softmax_scale · log2(e)
  bool causal;
  int world, rank, interleave;

  Schedule sched;
  /// Fused small-batch path (see kFusedMaxBatch): the schedule is computed in each CTA of the
  /// attention and combine grids over `parts` parts. With in_grid_merge there is no combine grid:
  /// the last CTAs to arrive at a split request's counter merge its partials, a column slice each
  /// (merge_arrive). A counter word holds merge_tag (this call's, never 0 or ~0) and the count;
  /// a word with another tag counts as zero, so the caller's workspace needs no clearing, and the
  /// last merger resets the word so that a replayed graph (the same tag) finds it clean.
  bool fused, in_grid_merge;
  unsigned merge_tag;
  /// Near-equal requests, more than parts: several whole requests to a part (split::plan);
  /// MLAKV_DECODE_WHOLE=0 splits them instead.
  bool whole_requests;
  /// At most half as many near-equal requests as parts: each cut into ⌊parts / B⌋ segments
  /// aligned to parts where that is within this many units of the balanced payload (split::plan;
  /// MLAKV_DECODE_ALIGN=N, default 2; −1: off).
  int align_slack;
  /// The register-operand FP8 producer's tiles in flight: tile k is issued once tile k − rs_inflight
  /// has landed (1 unless MLAKV_DECODE_RS_INFLIGHT=2 or 3; the kernel keeps it below its ring's
  /// stages). H100, session 37: 1 is the fastest; the H200, with ~1.4× the bytes a second, may want 2.
  int rs_inflight;
  int parts;
  unsigned long long* counters;
  /// The attention and combine grids are launched as programmatic dependents (host-side choice);
  /// pdl_first: the step's first grid too, of the kernel before the step.
  bool pdl, pdl_first;

  /// bf16 caches on the sm90 kernel: whole tiles arrive by TMA through this map over the cache
  /// (tensor_map.hpp: boxes of 64 columns × kv_box_rows tokens of one block); kv_tma false where
  /// the map does not apply or MLAKV_DECODE_TMA=0. The seesaw's partial last tile of a request
  /// never takes it (its tokens past the end must read as zeros, which its cp.async path gives);
  /// the lock-step form takes it and zeroes those rows in shared memory.
  CUtensorMap kv_map;
  CUtensorMap kv_map_hi;  ///< the lock-step form's second half (column blocks 4–8), box rows 64
  bool kv_tma;
  int kv_box_rows, kv_box_cblocks;
  /// bf16 at 64 rows per CTA in the lock-step form (MLAKV_DECODE_FORM=ls; kv_box_cblocks 4 where
  /// the boxes are 64 tokens, the two maps each a half of the tile; else 1).
  bool lockstep;
  /// Rows-as-M form, publication first: after the other's P·V is issued, Q·Kᵀ goes next and the
  /// other's stage is released once that P·V is done (overlap: bf16's default since session 23);
  /// the stage released first, then Q·Kᵀ (release: fp8's default, and bf16's in sessions 13–22);
  /// or overlap where this tile's stage has already landed and release otherwise (adaptive).
  /// MLAKV_DECODE_RM_ORDER=release|overlap|adaptive.
  RmOrder rm_order;
  /// Rows-as-M form (bf16 with TMA, fp8 always): the CTAs of a request's row tiles run as
  /// clusters of this many (2, along the grid's y; 1: no cluster). Each CTA brings half of every
  /// tile into both (bf16: multicast boxes; fp8: widened, by st.async), so each tile crosses from
  /// L2 once per pair instead of once per CTA; a stage is refilled once both CTAs' consumers
  /// released it.
  int cluster;
  /// Rows per CTA of the sm90 kernel (sm90_rows_per_cta, decided once on the host per call).
  int cta_rows;
};

/// Programmatic dependent launch (sm_90+): schedule -> attention -> combine are launched so that
/// each next grid is scheduled while the previous one runs, and waits in pdl_wait() for the
/// previous grid's completion (and memory) before reading anything it wrote. Both are no-ops
/// when the grid was launched without the attribute, so every kernel may call them.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

/// Launches `kernel(args...)`; with `pdl`, as a programmatic dependent of the stream's previous
/// kernel (the launch stays capturable: a graph records it as a programmatic edge); with
/// cluster_y > 1, as clusters of that many CTAs along y.
template <typename... P, typename... A>
inline cudaError_t launch_clustered(bool pdl, int cluster_y, void (*kernel)(P...), dim3 grid, dim3 block,
                                    std::size_t smem, cudaStream_t stream, A&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid, cfg.blockDim = block, cfg.dynamicSmemBytes = smem, cfg.stream = stream;
  cudaLaunchAttribute attr[2];
  unsigned n = 0;
  if (pdl) {
    attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n++].val.programmaticStreamSerializationAllowed = 1;
  }
  if (cluster_y > 1) {
    attr[n].id = cudaLaunchAttributeClusterDimension;
    attr[n].val.clusterDim.x = 1;
    attr[n].val.clusterDim.y = static_cast<unsigned>(cluster_y);
    attr[n++].val.clusterDim.z = 1;
  }
  cfg.attrs = attr, cfg.numAttrs = n;
  return cudaLaunchKernelEx(&cfg, kernel, static_cast<A&&>(args)...);
}
template <typename... P, typename... A>
inline cudaError_t launch_maybe_pdl(bool pdl, void (*kernel)(P...), dim3 grid, dim3 block, std::size_t smem,
                                    cudaStream_t stream, A&&... args) {
  return launch_clustered(pdl, 1, kernel, grid, block, smem, stream, static_cast<A&&>(args)...);
}

#ifdef __CUDACC__
__device__ __forceinline__ int local_len(int L, int rank, int world, int inter) {
  if (L <= 0) return 0;
  if (world == 1) return L;
  const int base = (L / (inter * world)) * inter;
  int extra = L - base * world - rank * inter;
  extra = extra < 0 ? 0 : (extra > inter ? inter : extra);
  return base + extra;
}

using split::segments;

/// Request b's local length and tiles, recorded in s; cost: its tiles plus a segment's fixed cost.
__device__ __forceinline__ void request_tiles(const DecodeArgs& a, const Schedule& s, int b, int& n, int& cost) {
  // From L2 (ld.global.cg): the fused combine reads the lengths before its griddepcontrol.wait,
  // ordered after their writer only through the attention grid's own wait, so no SM's L1 copy
  // of an earlier step's lengths may answer.
  const int len = local_len(__ldcg(a.seq_lens + b * a.sl_s0), a.rank, a.world, a.interleave);
  n = (len + kTile - 1) / kTile;
  cost = split::request_cost(n);
  s.ntiles[b] = n;
  s.len_local[b] = len;
}

/// Records request b (of B) at cost offset `first` (b = 0 also the header: payload and total)
/// and returns its number of split segments (0 for b >= B).
__device__ __forceinline__ int place_request(const Schedule& s, int b, int B, int first, int total, int payload, int n) {
  if (b < B) s.prefix[b] = first;
  if (b == 0) {
    s.prefix[B] = total;
    s.header[0] = payload;
    s.header[1] = total;
  }
  const int nsplit = b < B ? segments(n, first + kSegmentCost, payload) : 0;
  if (b < B) s.nsplit[b] = nsplit;
  return nsplit;
}

/// B <= 32: the whole schedule in one warp (lane = request), shuffles only, into `s` (global
/// memory for the schedule grid, shared memory on the fused path). All 32 lanes call it.
__device__ __forceinline__ void schedule_warp(const DecodeArgs& a, const Schedule& s, int parts) {
  const int B = a.batch, b = threadIdx.x & 31;
  int n = 0, cost = 0;
  if (b < B) request_tiles(a, s, b, n, cost);
  int incl = cost;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int y = __shfl_up_sync(0xffffffffu, incl, o);
    if (b >= o) incl += y;
  }
  int first = incl - cost, total = __shfl_sync(0xffffffffu, incl, 31);
  const int max_cost = static_cast<int>(__reduce_max_sync(0xffffffffu, static_cast<unsigned>(cost)));
  const split::Plan sp = split::plan(B, parts, total, max_cost, a.whole_requests, a.align_slack);
  if (sp.stride) first = b * sp.stride, total = B * sp.stride;
  const int nsplit = place_request(s, b, B, first, total, sp.payload, n);
  const int v = nsplit > 1 ? nsplit : 0;
  int vi = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int y = __shfl_up_sync(0xffffffffu, vi, o);
    if (b >= o) vi += y;
  }
  if (b < B) s.split_base[b] = v > 0 ? vi - v : -1;
  const unsigned listed = __ballot_sync(0xffffffffu, b < B && nsplit != 1);  // split, or empty
  if (b < B && nsplit != 1) s.list[__popc(listed & ((1u << b) - 1))] = b;
  if (b == 0) s.header[2] = __popc(listed);
}

/// In-grid merge: the last min(ns, kMergeMaxSlices) CTAs to arrive at a request of ns partials
/// each merge one column slice of it (the others return at once). At most 128: a slice holds at
/// least one float4 of the 512 columns.
#ifndef MLAKV_DECODE_MERGE_SLICES
#define MLAKV_DECODE_MERGE_SLICES 128
#endif
constexpr int kMergeMaxSlices = MLAKV_DECODE_MERGE_SLICES;
static_assert(kMergeMaxSlices >= 1 && kMergeMaxSlices <= 128, "a merge slice holds at least one float4 column");
__device__ __forceinline__ int merge_slices(int ns) { return min(ns, kMergeMaxSlices); }
#endif

/// Turns seq_lens into the split-KV schedule (one CTA; no host synchronization).
void launch_schedule(const DecodeArgs& a, int parts, cudaStream_t stream);
/// The attention kernel over grid (parts, row tiles).
void launch_attention(const DecodeArgs& a, CacheFormat format, int parts, cudaStream_t stream);
/// Merges the partials of split requests and writes empty requests (sms: the device's SMs).
void launch_combine(const DecodeArgs& a, int parts, int sms, cudaStream_t stream);

}  // namespace mlakv::cuda::mla
