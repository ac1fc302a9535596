// Validation of mla_decode and merge_states (SPEC §5), shared by both backends. Lengths and block
// ids are read only when they live on the host.
#include <cmath>
#include <limits>
#include <string>

#include "check.hpp"
#include "mlakv/dcp.hpp"
#include "validate.hpp"

namespace mlakv::detail {
namespace {

// mla_decode packs s_q · heads query rows into one tile on the GPU; beyond this a decode step is a
// prefill, which has its own kernels.
constexpr int64_t kMaxQueriesPerRequest = 16;

int64_t i32_at(const Tensor& t, int64_t i) { return static_cast<const int32_t*>(t.data)[i * t.stride[0]]; }
int64_t i32_at(const Tensor& t, int64_t i, int64_t j) {
  return static_cast<const int32_t*>(t.data)[i * t.stride[0] + j * t.stride[1]];
}

// Each request's local rows [0, local_length(seq_len)) must fit its block-table row and name
// existing blocks.
void check_lengths_and_blocks(const Cache& cache, const Tensor& block_table, const Tensor& seq_lens,
                              const DcpShard& shard) {
  const int64_t bs = cache.desc.block_size, max_blocks = block_table.size(1), cap = table_capacity(max_blocks, bs);
  for (int64_t b = 0; b < seq_lens.size(0); ++b) {
    const int64_t len = i32_at(seq_lens, b);
    MLAKV_REQUIRE(len >= 0, "seq_lens[", b, "]: ", len, ", expected >= 0");
    const int64_t local = dcp::local_length(len, shard.rank, shard.world, shard.interleave);
    if (shard.world > 1)
      MLAKV_REQUIRE(local <= cap, "seq_lens[", b, "]: ", len, " tokens puts ", local, " on DCP rank ",
                    shard.rank, " of ", shard.world, " (interleave ", shard.interleave,
                    "), beyond the block_table capacity of ", max_blocks, " blocks x ", bs, " = ", cap, " tokens");
    else
      MLAKV_REQUIRE(len <= cap, "seq_lens[", b, "]: ", len, ", beyond the block_table capacity of ", max_blocks,
                    " blocks x ", bs, " = ", cap, " tokens");
    for (int64_t j = 0; j < (local + bs - 1) / bs; ++j) {
      const int64_t id = i32_at(block_table, b, j);
      MLAKV_REQUIRE(id >= 0 && id < cache.desc.num_blocks, "block_table[", b, "][", j, "]: block id ", id,
                    ", expected in [0, ", cache.desc.num_blocks, ") (used by seq_lens[", b, "] = ", len, ")");
    }
  }
}

void check_state(const Tensor& o, const Tensor& lse, std::string_view o_name, std::string_view lse_name, Device dev,
                 const Tensor& like) {
  check_tensor(o, o_name, dev);
  check_dtype(o, o_name, {DType::bf16, DType::f32});
  check_ndim(o, o_name, 3);
  for (int d = 0; d < 3; ++d) check_dim(o, o_name, d, like.shape[d]);
  check_inner_contiguous(o, o_name);
  check_tensor(lse, lse_name, dev);
  check_dtype(lse, lse_name, {DType::f32});
  check_ndim(lse, lse_name, 2);
  check_dim(lse, lse_name, 0, like.shape[0]);
  check_dim(lse, lse_name, 1, like.shape[1]);
}

}  // namespace

Device validate_mla_decode(const Tensor& q, const Cache& cache, const Tensor& block_table, const Tensor& seq_lens,
                           const Tensor& out, const Tensor& lse, const DecodeParams& params, Workspace workspace) {
  const Device dev = q.device;
  check_tensor(q, "q", dev);
  check_dtype(q, "q", {DType::bf16, DType::e4m3});
  check_ndim(q, "q", 4);
  MLAKV_REQUIRE(q.shape[3] == kHeadDim, "q: head width ", q.shape[3], " (", q.describe(), "), expected ", kHeadDim,
                " (latent ", kLatentDim, " + rope ", kRopeDim, "; other MLA dimensions are not supported)");
  check_inner_contiguous(q, "q");
  const int64_t batch = q.shape[0], s_q = q.shape[1], heads = q.shape[2];
  MLAKV_REQUIRE(s_q >= 1 && s_q <= kMaxQueriesPerRequest, "q: s_q (dimension 1) is ", s_q, ", expected 1..",
                kMaxQueriesPerRequest);
  MLAKV_REQUIRE(heads >= 1, "q: heads (dimension 2) is ", heads, ", expected >= 1");
  // Batch and query rows (s_q x heads) are int counts in the workspace query and the kernels.
  MLAKV_REQUIRE(batch <= std::numeric_limits<int>::max(), "q: batch (dimension 0) is ", batch, ", expected <= ",
                std::numeric_limits<int>::max());
  MLAKV_REQUIRE(s_q * heads <= std::numeric_limits<int>::max(), "q: s_q x heads is ", s_q, " x ", heads, " = ",
                s_q * heads, ", expected <= ", std::numeric_limits<int>::max());

  validate_cache(cache, "cache");
  MLAKV_REQUIRE(cache.device == dev, "cache is on ", cache.device.str(), ", expected ", dev.str(),
                " (all tensors of an op must be on one device)");
  MLAKV_REQUIRE(cache.desc.format != CacheFormat::dsv4,
                "cache.desc.format: dsv4 is not supported by mla_decode (its head dim is 512, not 576), expected bf16, "
                "fp8 or fp8_ds_mla");

  check_block_table(block_table, dev, batch);
  check_tensor(seq_lens, "seq_lens", dev);
  check_dtype(seq_lens, "seq_lens", {DType::i32});
  check_ndim(seq_lens, "seq_lens", 1);
  check_dim(seq_lens, "seq_lens", 0, batch);

  check_tensor(out, "out", dev);
  check_dtype(out, "out", {DType::bf16, DType::f32});
  check_ndim(out, "out", 4);
  for (int d = 0; d < 3; ++d) check_dim(out, "out", d, q.shape[d]);
  MLAKV_REQUIRE(out.shape[3] == kLatentDim, "out: width ", out.shape[3], " (", out.describe(), "), expected ",
                kLatentDim);
  check_inner_contiguous(out, "out");
  check_tensor(lse, "lse", dev);
  check_dtype(lse, "lse", {DType::f32});
  check_ndim(lse, "lse", 3);
  for (int d = 0; d < 3; ++d) check_dim(lse, "lse", d, q.shape[d]);
  check_no_self_overlap(out, "out");
  check_no_self_overlap(lse, "lse");

  MLAKV_REQUIRE(std::isfinite(params.softmax_scale) && params.softmax_scale > 0.0f, "params.softmax_scale: ",
                params.softmax_scale, ", expected a finite value > 0 (usually 1 / sqrt(576))");
  if (q.dtype == DType::e4m3) {
    check_scale_pointer(params.q_scale, "params.q_scale", "the float scale of the e4m3 q", dev.is_cpu());
  }
  dcp::check_shard(params.shard, cache.desc.block_size);

  const std::size_t need = mla_decode_workspace_size(static_cast<int>(batch), static_cast<int>(s_q),
                                                     static_cast<int>(heads), dev);
  MLAKV_REQUIRE(workspace.bytes >= need, "workspace.bytes: ", workspace.bytes, ", expected >= ", need,
                " (mla_decode_workspace_size(", batch, ", ", s_q, ", ", heads, ", ", dev.str(), "))");
  MLAKV_REQUIRE(need == 0 || workspace.data != nullptr, "workspace.data: null for ", workspace.bytes, " bytes");
  // The CUDA path writes its split-KV partials to the workspace and combines them into out and lse.
  check_outputs_disjoint({byte_span(out, "out"), byte_span(lse, "lse"), byte_span(workspace.data, need, dev, "workspace")},
                         {byte_span(q, "q"), cache_span(cache), cache_scale_span(cache),
                          byte_span(block_table, "block_table"), byte_span(seq_lens, "seq_lens"),
                          byte_span(params.q_scale, q.dtype == DType::e4m3 ? sizeof(float) : 0, dev, "params.q_scale")});

  if (dev.is_cpu()) check_lengths_and_blocks(cache, block_table, seq_lens, params.shard);
  return dev;
}

Device validate_merge_states(const Tensor& o_a, const Tensor& lse_a, const Tensor& o_b, const Tensor& lse_b,
                             const Tensor& o, const Tensor& lse) {
  const Device dev = o_a.device;
  check_tensor(o_a, "o_a", dev);
  check_ndim(o_a, "o_a", 3);
  check_state(o_a, lse_a, "o_a", "lse_a", dev, o_a);
  check_state(o_b, lse_b, "o_b", "lse_b", dev, o_a);
  check_state(o, lse, "o", "lse", dev, o_a);
  check_no_self_overlap(o, "o");
  check_no_self_overlap(lse, "lse");
  // Each state is read before it is written, by the same thread: o may be o_a or o_b itself.
  check_outputs_disjoint({byte_span(o, "o"), byte_span(lse, "lse")},
                         {byte_span(o_a, "o_a"), byte_span(lse_a, "lse_a"), byte_span(o_b, "o_b"), byte_span(lse_b, "lse_b")},
                         InPlace::same_view);
  return dev;
}

}  // namespace mlakv::detail
