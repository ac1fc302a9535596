// The device-side steps of the DCP algorithm (src/dcp/*.cpp), one table per backend. The
// algorithm itself (which buffers, which collectives, in which order) is written once in
// src/dcp; a backend provides only these element-wise kernels. Arguments arrive validated.
//
// Shapes, with T = batch · s_q query rows, N local heads, W ranks, D = 512, K = 576:
//   o_partial  f32 [T][W·N][D]   this rank's local attention for every head of the group
//   lse_partial f32 [T][W·N]
//   lse_all    f32 [W][T][W·N]   every rank's lse_partial, rank-major (all-gathered)
// An LSE that is -inf, +inf or NaN is an empty partial: weight 0; all empty gives o = 0,
// lse = -inf. Merges run in at least fp32.
#pragma once

#include <cstddef>
#include <cstdint>

#include "dcp/workspace.hpp"
#include "mlakv/dcp.hpp"

namespace mlakv::dcp::ops {

struct Kernels {
  /// slot_mapping[t] = the local slot of token t if `shard.rank` owns positions[t], else -1
  /// (also -1 for a negative position or request: padding). Tensors as in dcp::slot_mapping.
  void (*slot_mapping)(const Tensor& positions, const Tensor& token_to_req, const Tensor& block_table,
                       int block_size, DcpShard shard, const Tensor& slot_mapping, Stream stream);

  /// q_local bf16 [B, s_q, N, K] (strides on dims 0..2) -> dst [T][N][K] contiguous: bf16 copy,
  /// or e4m3(x / *q_scale) (saturating) when to_e4m3.
  void (*pack_q)(const Tensor& q_local, void* dst, bool to_e4m3, const float* q_scale, Stream stream);

  /// src [W][T][N][K] of src_dtype (bf16 or e4m3) -> dst [T][W·N][K]: rank r's heads land at
  /// [rN, rN + N). With quantize (src bf16 only) dst is e4m3(x / *q_scale), else src_dtype.
  void (*arrange_q)(const void* src, DType src_dtype, int world, int64_t tokens, int heads, void* dst,
                    bool quantize, const float* q_scale, Stream stream);

  /// Merge (a), before the reduce-scatter: dst [W][T][N][D] with
  /// dst[d][t][n] = o_partial[t][d·N + n] · exp(lse_all[rank][t][d·N + n] − LSE(t, d·N + n)),
  /// LSE over the W entries of lse_all (0 where all are empty).
  void (*rescale_partials)(const float* o_partial, const float* lse_all, int world, int rank, int64_t tokens,
                           int heads, float* dst, Stream stream);

  /// Merge (a), after the reduce-scatter: out [B, s_q, N, D] (bf16 or f32, strides on dims 0..2)
  /// = o_sum [T][N][D]; lse [B, s_q, N] (strided) = LSE(t, rank·N + n) from lse_all.
  void (*finish_reduce_scatter)(const float* o_sum, const float* lse_all, int world, int rank, int64_t tokens,
                                int heads, const Tensor& out, const Tensor& lse, Stream stream);

  /// Merge (b), before the all-to-all: dst [W] blocks of packed_floats(T, N) floats; block d is
  /// o_partial[t][d·N + n] as [T][N][D], then lse_partial[t][d·N + n] as [T][N].
  void (*pack_partials)(const float* o_partial, const float* lse_partial, int world, int64_t tokens, int heads,
                        float* dst, Stream stream);

  /// Merge (b), after the all-to-all: recv [W] blocks as pack_partials wrote them (block s from
  /// rank s) -> the merged out / lse as in finish_reduce_scatter.
  void (*merge_packed)(const float* recv, int world, int64_t tokens, int heads, const Tensor& out, const Tensor& lse,
                       Stream stream);

  /// offsets [W][B + 1] int32: offsets[r][b] = Σ_{b' < b} local_length(len_b', r, W, I) with
  /// len_b = cu_seq_lens[b + 1] − cu_seq_lens[b]: where rank r's rows of request b start in its
  /// packed context buffer.
  void (*context_offsets)(const Tensor& cu_seq_lens, int world, int interleave, int32_t* offsets, Stream stream);

  /// This rank's rows of each request's chunk, as stored bytes (codec packed form, token_bytes()
  /// each; dsv4: 576 data bytes then 8 scale bytes), to dst [capacity][token_bytes]:
  /// request b's i-th local row (local index seq_starts[b] / W + i, i < local_length(len_b)) goes
  /// to row offsets[rank][b] + i. Rows past offsets[rank][B], or at or past `capacity` (device
  /// offsets from garbage lengths), are not written.
  void (*pack_context)(const Cache& cache, const Tensor& block_table, const Tensor& cu_seq_lens,
                       const Tensor& seq_starts, DcpShard shard, const int32_t* offsets, uint8_t* dst,
                       int64_t capacity, Stream stream);

  /// recv [W][capacity][token_bytes] (rank-major, all-gathered) -> out [rows, row_width] (bf16 or
  /// f32, row stride given): position p of request b's chunk comes from rank owner(p) at row
  /// offsets[owner][b] + local_index(p) and lands, dequantized, in row cu_seq_lens[b] + p.
  /// `scale` is the fp8 per-tensor scale (device memory), unused for other formats.
  void (*unpack_context)(const uint8_t* recv, int64_t capacity, CacheFormat format, const float* scale,
                         const Tensor& cu_seq_lens, int world, int interleave, const int32_t* offsets,
                         const Tensor& out, Stream stream);
};

/// Floats in one destination's block of the merge (b) all-to-all: T·N·(D + 1) (SIZE_MAX where
/// that overflows, for the workspace plan to report).
inline std::size_t packed_floats(int64_t tokens, int heads) { return product(tokens, heads, kLatentDim + 1); }

/// The CPU kernels (src/cpu/dcp_kernels.cpp).
const Kernels& cpu_kernels();

#if MLAKV_WITH_CUDA
/// The CUDA kernels (src/cuda/dcp_kernels.cu): asynchronous on the given stream, no allocation,
/// no host synchronization.
const Kernels& cuda_kernels();
#endif

/// The kernels for `device`; throws mlakv::Error naming `op` where the backend has none.
const Kernels& kernels_for(Device device, const char* op);

}  // namespace mlakv::dcp::ops
