// Shared by the MLA decode launcher, its scheduler, main kernel and combine kernel: the split-KV
// schedule's workspace layout, the kernel arguments, and the host-side sizing rules (which must
// agree between mla_decode_workspace_size and the launcher).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "mlakv/format.hpp"

namespace mlakv::cuda::mla {

/// Tokens per KV tile: the unit of scheduling and of the shared-memory pipeline.
inline constexpr int kTile = 64;
/// 8 warps: each owns 8 tokens of a tile for Q·Kᵀ and 64 of the 512 output columns for P·V.
inline constexpr int kThreads = 256;
inline constexpr int kWarps = kThreads / 32;
/// Cost of one request segment (Q load, epilogue, partial write) in tile units, charged by the
/// scheduler so that parts holding many short requests get fewer tiles.
inline constexpr int kSegmentCost = 2;
/// Query rows (s_q · heads) per CTA: 16 or 32 (one or two m16 fragments).
inline int rows_per_cta(int rows) { return rows <= 16 ? 16 : 32; }
inline int num_mtiles(int rows) { return (rows + rows_per_cta(rows) - 1) / rows_per_cta(rows); }
/// Parts (CTAs along the KV dimension): one wave of CTAs over all row tiles.
inline int num_parts(int rows, int sms) {
  const int p = sms / num_mtiles(rows);
  return p < 1 ? 1 : p;
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
  std::size_t header, prefix, ntiles, len_local, split_base, nsplit, list, part_lse, part_o, total;
};

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
  l.total = at;
  return l;
}

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
  /// The attention and combine grids are launched as programmatic dependents (host-side choice).
  bool pdl;
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
/// kernel (the launch stays capturable: a graph records it as a programmatic edge).
template <typename... P, typename... A>
inline cudaError_t launch_maybe_pdl(bool pdl, void (*kernel)(P...), dim3 grid, dim3 block, std::size_t smem,
                                    cudaStream_t stream, A&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid, cfg.blockDim = block, cfg.dynamicSmemBytes = smem, cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr, cfg.numAttrs = pdl ? 1 : 0;
  return cudaLaunchKernelEx(&cfg, kernel, static_cast<A&&>(args)...);
}

/// Turns seq_lens into the split-KV schedule (one CTA; no host synchronization).
void launch_schedule(const DecodeArgs& a, int parts, cudaStream_t stream);
/// The attention kernel over grid (parts, row tiles).
void launch_attention(const DecodeArgs& a, CacheFormat format, int parts, cudaStream_t stream);
/// Merges the partials of split requests and writes empty requests (sms: the device's SMs).
void launch_combine(const DecodeArgs& a, int parts, int sms, cudaStream_t stream);

}  // namespace mlakv::cuda::mla
