// One DCP decode step (SPEC §4), written once for every backend: collectives from the
// Communicator, element-wise steps from the backend's dcp::ops::Kernels, the local attention from
// the public mla_decode.
#include <cmath>

#include <algorithm>
#include <limits>

#include "check.hpp"
#include "dcp/dcp_ops.hpp"
#include "dcp/workspace.hpp"
#include "mlakv/dcp.hpp"
#include "validate.hpp"

namespace mlakv::dcp {
namespace {

// Buffers of one step. q_full, the partials and mla_decode's own workspace live through the
// step; the query exchange and each merge's buffers share one region, used one after the other.
struct DecodeLayout {
  int64_t tokens = 0;  // batch · s_q
  int heads = 0, world = 0;
  std::size_t q_full = 0, o_partial = 0, lse_partial = 0, mla = 0, mla_bytes = 0;
  std::size_t q_send = 0, q_gathered = 0;         // query exchange
  std::size_t lse_all = 0, rs_send = 0, rs_recv = 0;  // merge (a)
  std::size_t a2a_send = 0, a2a_recv = 0;         // merge (b)
  std::size_t total = 0;
};

DecodeLayout decode_layout(int batch, int s_q, int heads, int world, Device device) {
  DecodeLayout l;
  l.tokens = static_cast<int64_t>(batch) * s_q;
  l.heads = heads;
  l.world = world;
  const int64_t all_heads = static_cast<int64_t>(heads) * world;
  MLAKV_REQUIRE(all_heads <= std::numeric_limits<int>::max(), "local_heads x world: ", heads, " x ", world, " = ",
                all_heads, " query heads, expected <= ", std::numeric_limits<int>::max());
  const auto T = static_cast<std::size_t>(l.tokens), N = static_cast<std::size_t>(heads),
             W = static_cast<std::size_t>(world);
  constexpr std::size_t K = kHeadDim, D = kLatentDim;
  l.mla_bytes = mla_decode_workspace_size(batch, s_q, static_cast<int>(all_heads), device);
  // Sizes saturate where they overflow; the plan then reports it.
  WorkspacePlan p;
  l.q_full = p.take(product(T, W, N, K, 2));  // bf16 or e4m3
  l.o_partial = p.take(product(T, W, N, D, 4));
  l.lse_partial = p.take(product(T, W, N, 4));
  l.mla = p.take(l.mla_bytes);
  const std::size_t shared = p.used();
  l.q_send = p.take(product(T, N, K, 2));
  l.q_gathered = p.take(product(W, T, N, K, 2));
  std::size_t end = p.used();
  p.reset(shared);
  l.lse_all = p.take(product(W, T, W, N, 4));
  l.rs_send = p.take(product(W, T, N, D, 4));
  l.rs_recv = p.take(product(T, N, D, 4));
  end = std::max(end, p.used());
  p.reset(shared);
  l.a2a_send = p.take(product(W, ops::packed_floats(l.tokens, heads), 4));
  l.a2a_recv = p.take(product(W, ops::packed_floats(l.tokens, heads), 4));
  MLAKV_REQUIRE(!p.overflowed(), "dcp::decode workspace for batch ", batch, ", s_q ", s_q, ", local_heads ", heads,
                ", world ", world, ": more than ", WorkspacePlan::kMaxBytes,
                " bytes, expected sizes whose workspace fits in memory");
  l.total = std::max(end, p.used()) + WorkspacePlan::kAlign;  // slack to align any base pointer
  return l;
}

// Everything checked before the first collective, so a bad argument leaves nothing written.
void validate_decode(Communicator& comm, const Tensor& q_local, const Tensor& out, const Tensor& lse,
                     const DecodeOptions& opts, Workspace workspace, const DecodeLayout& layout) {
  using namespace detail;
  const Device dev = comm.device();
  MLAKV_REQUIRE(comm.world() >= 1, "comm.world(): ", comm.world(), ", expected >= 1");
  check_tensor(q_local, "q_local", dev);
  check_dtype(q_local, "q_local", {DType::bf16});
  check_ndim(q_local, "q_local", 4);
  check_dim(q_local, "q_local", 3, kHeadDim);
  check_inner_contiguous(q_local, "q_local");
  MLAKV_REQUIRE(q_local.shape[2] >= 1, "q_local: local heads (dimension 2) is ", q_local.shape[2], ", expected >= 1");
  check_tensor(out, "out", dev);
  check_dtype(out, "out", {DType::bf16, DType::f32});
  check_ndim(out, "out", 4);
  for (int d = 0; d < 3; ++d) check_dim(out, "out", d, q_local.shape[d]);
  check_dim(out, "out", 3, kLatentDim);
  check_inner_contiguous(out, "out");
  check_tensor(lse, "lse", dev);
  check_dtype(lse, "lse", {DType::f32});
  check_ndim(lse, "lse", 3);
  for (int d = 0; d < 3; ++d) check_dim(lse, "lse", d, q_local.shape[d]);
  check_no_self_overlap(out, "out");
  check_no_self_overlap(lse, "lse");
  MLAKV_REQUIRE(opts.merge == Merge::allgather_reduce_scatter || opts.merge == Merge::all_to_all, "opts.merge: ",
                static_cast<int>(opts.merge), ", expected allgather_reduce_scatter or all_to_all");
  MLAKV_REQUIRE(opts.q_quant == QueryQuant::none || opts.q_quant == QueryQuant::e4m3_after_gather ||
                    opts.q_quant == QueryQuant::e4m3_before_gather,
                "opts.q_quant: ", static_cast<int>(opts.q_quant),
                ", expected none, e4m3_after_gather or e4m3_before_gather");
  if (opts.q_quant != QueryQuant::none) {
    check_scale_pointer(opts.q_scale, "opts.q_scale", "the float query scale (opts.q_quant quantizes q to e4m3)",
                        dev.is_cpu());
  }
  MLAKV_REQUIRE(workspace.bytes >= layout.total, "workspace.bytes: ", workspace.bytes, ", expected >= ", layout.total,
                " (dcp::decode_workspace_size(", q_local.shape[0], ", ", q_local.shape[1], ", ", q_local.shape[2], ", ",
                layout.world, ", ", dev.str(), "))");
  MLAKV_REQUIRE(workspace.data != nullptr, "workspace.data: null, expected ", layout.total, " bytes");
}

// The step writes out, lse and the whole workspace (the other ranks' collectives too) while it
// reads the caller's inputs. Checked before the local step's validation, whose own overlap check
// would name the step's internal views (its "out" is a partial in the workspace).
void check_step_memory(const Tensor& q_local, const Cache& cache, const Tensor& block_table, const Tensor& seq_lens,
                       const Tensor& out, const Tensor& lse, const DecodeOptions& opts, Workspace workspace,
                       const DecodeLayout& layout) {
  using namespace detail;
  const Device dev = q_local.device;
  // What the spans need (offsets and sizes within int64); the local step checks the rest.
  validate_cache(cache, "cache");
  check_tensor(block_table, "block_table", dev);
  check_tensor(seq_lens, "seq_lens", dev);
  const std::size_t scale_bytes = opts.q_quant != QueryQuant::none ? sizeof(float) : 0;
  check_outputs_disjoint({byte_span(out, "out"), byte_span(lse, "lse"), byte_span(workspace.data, layout.total, dev, "workspace")},
                         {byte_span(q_local, "q_local"), cache_span(cache), cache_scale_span(cache),
                          byte_span(block_table, "block_table"), byte_span(seq_lens, "seq_lens"),
                          byte_span(opts.q_scale, scale_bytes, dev, "opts.q_scale")});
}

}  // namespace

std::size_t decode_workspace_size(int batch, int s_q, int local_heads, int world, Device device) {
  MLAKV_REQUIRE(batch >= 0, "batch: ", batch, ", expected >= 0");
  MLAKV_REQUIRE(s_q >= 1, "s_q: ", s_q, ", expected >= 1");
  MLAKV_REQUIRE(local_heads >= 1, "local_heads: ", local_heads, ", expected >= 1");
  MLAKV_REQUIRE(world >= 1, "world: ", world, ", expected >= 1");
  return decode_layout(batch, s_q, local_heads, world, device).total;
}

void decode(Communicator& comm, const Tensor& q_local, const Cache& cache, const Tensor& block_table,
            const Tensor& seq_lens, const Tensor& out, const Tensor& lse, const DecodeOptions& opts,
            Workspace workspace, Stream stream) {
  const Device dev = comm.device();
  const int W = comm.world(), rank = comm.rank();
  detail::check_ndim(q_local, "q_local", 4);
  // The layout (and the kernels' loop bounds) take int counts.
  for (int d = 0; d < 3; ++d)
    MLAKV_REQUIRE(q_local.shape[d] <= std::numeric_limits<int>::max(), "q_local: dimension ", d, " is ",
                  q_local.shape[d], ", expected <= ", std::numeric_limits<int>::max());
  const int batch = static_cast<int>(q_local.shape[0]), s_q = static_cast<int>(q_local.shape[1]),
            N = static_cast<int>(q_local.shape[2]);
  MLAKV_REQUIRE(s_q >= 1, "q_local: s_q (dimension 1) is ", s_q, ", expected >= 1");
  MLAKV_REQUIRE(N >= 1, "q_local: local heads (dimension 2) is ", N, ", expected >= 1");
  const DecodeLayout L = decode_layout(batch, s_q, N, W, dev);
  validate_decode(comm, q_local, out, lse, opts, workspace, L);
  check_step_memory(q_local, cache, block_table, seq_lens, out, lse, opts, workspace, L);

  auto* base = WorkspacePlan::aligned_base(workspace.data);
  const bool quant = opts.q_quant != QueryQuant::none;
  const bool quant_first = opts.q_quant == QueryQuant::e4m3_before_gather;
  const DType q_dtype = quant ? DType::e4m3 : DType::bf16;
  const DType wire_dtype = quant_first ? DType::e4m3 : DType::bf16;
  const int64_t T = L.tokens;

  // The local step's views, checked (with the cache, block table and lengths) before any
  // collective: a bad argument must not leave the other ranks half way through the step.
  const Tensor q_full(base + L.q_full, q_dtype, {batch, s_q, static_cast<int64_t>(W) * N, kHeadDim}, dev);
  const Tensor o_part(base + L.o_partial, DType::f32, {batch, s_q, static_cast<int64_t>(W) * N, kLatentDim}, dev);
  const Tensor lse_part(base + L.lse_partial, DType::f32, {batch, s_q, static_cast<int64_t>(W) * N}, dev);
  DecodeParams params;
  params.softmax_scale = opts.softmax_scale;
  params.causal = opts.causal;
  params.q_scale = quant ? opts.q_scale : nullptr;
  params.shard = {W, rank, opts.interleave};
  const Workspace mla_ws{base + L.mla, L.mla_bytes};
  detail::validate_mla_decode(q_full, cache, block_table, seq_lens, o_part, lse_part, params, mla_ws);
  const ops::Kernels& k = ops::kernels_for(dev, "dcp::decode");

  // 1. Every rank gets every head's queries.
  const std::size_t q_bytes = static_cast<std::size_t>(T) * N * kHeadDim * dtype_size(wire_dtype);
  k.pack_q(q_local, base + L.q_send, quant_first, opts.q_scale, stream);
  comm.all_gather(base + L.q_send, base + L.q_gathered, q_bytes, stream);
  k.arrange_q(base + L.q_gathered, wire_dtype, W, T, N, base + L.q_full, quant && !quant_first, opts.q_scale, stream);

  // 2. Attention over this rank's shard, f32 so the merge loses nothing to rounding.
  mla_decode(q_full, cache, block_table, seq_lens, o_part, lse_part, params, mla_ws, stream);

  // 3. Merge the W partials of this rank's heads.
  auto* o_partial = reinterpret_cast<const float*>(base + L.o_partial);
  auto* lse_partial = reinterpret_cast<const float*>(base + L.lse_partial);
  if (opts.merge == Merge::allgather_reduce_scatter) {
    auto* lse_all = reinterpret_cast<float*>(base + L.lse_all);
    auto* rs_send = reinterpret_cast<float*>(base + L.rs_send);
    auto* rs_recv = reinterpret_cast<float*>(base + L.rs_recv);
    comm.all_gather(lse_partial, lse_all, static_cast<std::size_t>(T) * W * N * sizeof(float), stream);
    k.rescale_partials(o_partial, lse_all, W, rank, T, N, rs_send, stream);
    comm.reduce_scatter_sum(rs_send, rs_recv, static_cast<std::size_t>(T) * N * kLatentDim, stream);
    k.finish_reduce_scatter(rs_recv, lse_all, W, rank, T, N, out, lse, stream);
  } else {
    auto* send = reinterpret_cast<float*>(base + L.a2a_send);
    auto* recv = reinterpret_cast<float*>(base + L.a2a_recv);
    k.pack_partials(o_partial, lse_partial, W, T, N, send, stream);
    comm.all_to_all(send, recv, ops::packed_floats(T, N) * sizeof(float), stream);
    k.merge_packed(recv, W, T, N, out, lse, stream);
  }
}

}  // namespace mlakv::dcp
