// The cache and attention operations (SPEC §3). Every op validates its arguments on the host
// (throwing mlakv::Error before anything is written), then runs on the device its tensors live
// on: the CPU reference or the CUDA backend. CUDA ops are asynchronous on `stream`.
//
// Kernels write their outputs (the cache, for the writers; the workspace) in parallel while they
// read the inputs, so an output may share no memory with an input or another output: such a call
// is rejected. The check compares spans (from the lowest to one past the highest byte of a view's
// elements), so views that interleave without sharing an element are rejected too. Only
// merge_states runs in place, and only with an output that is exactly an input's view.
#pragma once

#include <cstddef>
#include <optional>

#include "mlakv/format.hpp"
#include "mlakv/tensor.hpp"

namespace mlakv {

/// Op 1 (concat_and_cache_mla): token t of kv_c [T', 512] and k_pe [T', 64] (bf16 or f32, row
/// stride may exceed the width, T' >= T) goes to slot slot_mapping[t] (int64 [T]) in a bf16, fp8
/// or fp8_ds_mla cache; negative slots are skipped. fp8 needs cache.scale.
void write_cache(const Tensor& kv_c, const Tensor& k_pe, const Tensor& slot_mapping, const Cache& cache,
                 Stream stream = {});

/// Addressing shared by the gathers: sequence b contributes rows [cu_seq_lens[b], cu_seq_lens[b+1])
/// from logical positions seq_starts[b] + p through its block_table row.
struct GatherOptions {
  std::optional<Tensor> seq_starts;    ///< int32 [B]; absent = 0
  std::optional<Tensor> token_to_seq;  ///< int32 [rows]: row -> sequence; absent = computed
};

/// Op 2: raw byte copy of cached rows into dst [rows, token_bytes] (u8) or, for bf16 caches,
/// dst [rows, 576] bf16. dst's element type must match the cache's storage.
void gather_cache(const Cache& cache, const Tensor& block_table, const Tensor& cu_seq_lens, const Tensor& dst,
                  const GatherOptions& opts = {}, Stream stream = {});

/// Op 3: like gather_cache, writing dst [rows, 576] bf16 or f32, dequantizing fp8 / fp8_ds_mla.
void gather_dequant_cache(const Cache& cache, const Tensor& block_table, const Tensor& cu_seq_lens,
                          const Tensor& dst, const GatherOptions& opts = {}, Stream stream = {});

/// Op 4 (quantize_and_insert_k_cache): k [T', 512] bf16 -> dsv4 cache; negative slots skipped.
void dsv4_write(const Tensor& k, const Tensor& slot_mapping, const Cache& cache, Stream stream = {});

/// Op 5 (dequantize_and_gather_k_cache): out [R, max_rows, 512] bf16 (strides given); request r's
/// last gather_len tokens (all seq_len when gather_lens is absent) go to rows
/// [offset, offset + gather_len); other rows are untouched.
void dsv4_dequant_gather(const Cache& cache, const Tensor& block_table, const Tensor& seq_lens, const Tensor& out,
                         const std::optional<Tensor>& gather_lens = std::nullopt, int64_t offset = 0,
                         Stream stream = {});

/// Where this rank sits in a DCP group; {1, 0, 1} is a plain single-rank decode.
struct DcpShard {
  int world = 1;
  int rank = 0;
  int interleave = 1;
};

struct DecodeParams {
  float softmax_scale = 0.0f;
  bool causal = true;
  /// For e4m3 queries: one float in the device's memory; q = e4m3 · q_scale.
  const float* q_scale = nullptr;
  /// With world > 1, seq_lens are global lengths; the op attends over this rank's shard
  /// (local lengths, causal mask on global positions).
  DcpShard shard{};
};

/// Caller-provided scratch memory on the op's device.
struct Workspace {
  void* data = nullptr;
  std::size_t bytes = 0;
};

/// Bytes of workspace mla_decode needs for (batch, s_q, heads) on `device` (0 on the CPU).
std::size_t mla_decode_workspace_size(int batch, int s_q, int heads, Device device);

/// Op 6: q [B, s_q, H, 576] bf16 (or e4m3 with params.q_scale), cache bf16 / fp8 / fp8_ds_mla,
/// block_table [B, max_blocks] int32, seq_lens [B] int32 -> out [B, s_q, H, 512] (bf16, or f32)
/// and lse [B, s_q, H] f32 (natural log). No visible token: out 0, lse -inf.
/// On Hopper the step's kernels are chained by programmatic dependent launch: its first kernel
/// may start under the tail of the kernel before it (and waits for that kernel's completion
/// before touching any tensor), and a kernel the caller launches after the step with
/// programmatic stream serialization may start before the step ends, so it must
/// `griddepcontrol.wait` (cudaGridDependencySynchronize) before reading out or lse, as any such
/// kernel must. Ordinary launches, events and graph edges see the finished step.
void mla_decode(const Tensor& q, const Cache& cache, const Tensor& block_table, const Tensor& seq_lens,
                const Tensor& out, const Tensor& lse, const DecodeParams& params, Workspace workspace = {},
                Stream stream = {});

/// Op 7: o [N, H, D] (bf16 or f32) with lse [N, H] f32, for a and b -> o, lse. Empty (+inf, NaN,
/// -inf) states count as -inf; both empty gives o = 0, lse = -inf. In place: o may be exactly the
/// view o_a or o_b, and lse exactly lse_a or lse_b (same address, type, shape and strides).
void merge_states(const Tensor& o_a, const Tensor& lse_a, const Tensor& o_b, const Tensor& lse_b, const Tensor& o,
                  const Tensor& lse, Stream stream = {});

}  // namespace mlakv
