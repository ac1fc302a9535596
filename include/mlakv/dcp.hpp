// Decode context parallelism (SPEC §4): token sharding, the DCP decode step and the
// chunked-prefill context gather, over any Communicator. As for the ops (ops.hpp), outputs and
// workspaces may share no memory with the inputs or with each other.
#pragma once

#include <cstddef>
#include <cstdint>

#include "mlakv/comm.hpp"
#include "mlakv/format.hpp"
#include "mlakv/ops.hpp"

namespace mlakv::dcp {

/// Rank that stores global position t.
inline int owner(int64_t t, int world, int interleave) {
  return static_cast<int>((t / interleave) % world);
}
/// Index of position t within its owner's shard.
inline int64_t local_index(int64_t t, int world, int interleave) {
  return (t / (static_cast<int64_t>(interleave) * world)) * interleave + t % interleave;
}
/// Global position of local index j on `rank`.
inline int64_t global_position(int64_t j, int rank, int world, int interleave) {
  return (j / interleave) * static_cast<int64_t>(interleave) * world + static_cast<int64_t>(rank) * interleave +
         j % interleave;
}
/// Tokens of a length-L sequence stored on `rank`.
inline int64_t local_length(int64_t L, int rank, int world, int interleave) {
  const int64_t base = (L / (static_cast<int64_t>(interleave) * world)) * interleave;
  const int64_t rem = L - base * world;
  int64_t extra = rem - static_cast<int64_t>(rank) * interleave;
  extra = extra < 0 ? 0 : (extra > interleave ? interleave : extra);
  return base + extra;
}

/// Checks world >= 1, 0 <= rank < world, interleave >= 1 and block_size % interleave == 0.
void check_shard(const DcpShard& shard, int block_size);

/// slot_mapping [T] int64 for this rank: for token t of request token_to_req[t] (int32 [T]) at
/// global position positions[t] (int64 [T]), the local slot where this rank owns it, else -1.
/// block_table [B, max_blocks] int32 is the shared (local-index) block table.
void slot_mapping(const Tensor& positions, const Tensor& token_to_req, const Tensor& block_table, int block_size,
                  const DcpShard& shard, const Tensor& slot_mapping, Stream stream = {});

enum class Merge : uint8_t {
  allgather_reduce_scatter,  ///< all-gather LSEs, rescale locally, reduce-scatter over heads
  all_to_all,                ///< one packed all-to-all of (o, lse), then a local merge
};

enum class QueryQuant : uint8_t {
  none,                  ///< bf16 all-gather, bf16 queries
  e4m3_after_gather,     ///< bf16 all-gather, then e4m3 with scale q_scale
  e4m3_before_gather,    ///< e4m3 with the shared static q_scale, then the all-gather (half the bytes)
};

struct DecodeOptions {
  float softmax_scale = 0.0f;
  bool causal = true;
  int interleave = 1;
  Merge merge = Merge::all_to_all;
  QueryQuant q_quant = QueryQuant::none;
  const float* q_scale = nullptr;  ///< one float on the device, for QueryQuant != none
};

/// Workspace bytes dcp::decode needs (includes the local mla_decode's workspace).
std::size_t decode_workspace_size(int batch, int s_q, int local_heads, int world, Device device);

/// One DCP decode step on this rank: q_local [B, s_q, N, 576] bf16 (its N heads), the rank's
/// shard of the cache, the shared block_table and *global* seq_lens -> out [B, s_q, N, 512] bf16
/// and lse [B, s_q, N] f32 for its N heads over the whole context.
void decode(Communicator& comm, const Tensor& q_local, const Cache& cache, const Tensor& block_table,
            const Tensor& seq_lens, const Tensor& out, const Tensor& lse, const DecodeOptions& opts,
            Workspace workspace, Stream stream = {});

/// Workspace bytes dcp::gather_context needs for up to `max_rows` output rows over `batch` requests.
std::size_t gather_context_workspace_size(const CacheDesc& desc, int64_t max_rows, int batch, int world,
                                          int interleave);

/// Chunked-prefill context gather: request b's global positions [seq_starts[b], seq_starts[b] +
/// len_b) with len_b = cu_seq_lens[b+1] - cu_seq_lens[b] land, dequantized and in position order,
/// in out rows [cu_seq_lens[b], cu_seq_lens[b+1]) (out [rows, 576] bf16 or f32; 512 for dsv4) on
/// every rank. Each rank sends its local rows as stored bytes (FP8 stays FP8 on the wire).
/// seq_starts must be multiples of interleave·world.
void gather_context(Communicator& comm, const Cache& cache, const Tensor& block_table, const Tensor& cu_seq_lens,
                    const Tensor& seq_starts, const Tensor& out, int interleave, Workspace workspace,
                    Stream stream = {});

}  // namespace mlakv::dcp
