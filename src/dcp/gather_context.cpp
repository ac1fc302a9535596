// Chunked-prefill context gather (SPEC §4): every rank sends its local rows of each request's
// chunk as stored bytes (FP8 stays FP8 on the wire), all-gathers them and dequantizes after, in
// position order.
#include <algorithm>
#include <limits>

#include "check.hpp"
#include "dcp/dcp_ops.hpp"
#include "dcp/workspace.hpp"
#include "mlakv/dcp.hpp"
#include "validate.hpp"

namespace mlakv::dcp {
namespace {

// Rows one rank may send, known on the host without reading the lengths: a chunk of len tokens
// leaves at most floor(len / (I·W))·I + I <= len / W + I of them on any rank, and the chunks share
// the `rows` output rows.
int64_t rank_capacity(int64_t rows, int batch, int world, int interleave) {
  const int64_t extra = static_cast<int64_t>(batch) * interleave;
  return rows / world >= rows - extra ? rows : rows / world + extra;  // min(rows, rows / world + extra)
}

struct ContextLayout {
  int64_t capacity = 0;
  std::size_t offsets = 0, send = 0, recv = 0, total = 0;
};

ContextLayout context_layout(const CacheDesc& desc, int64_t rows, int batch, int world, int interleave) {
  ContextLayout l;
  l.capacity = rank_capacity(rows, batch, world, interleave);
  // Sizes saturate where they overflow; the plan then reports it.
  const std::size_t row_bytes = product(l.capacity, desc.token_bytes());
  WorkspacePlan p;
  l.offsets = p.take(product(world, static_cast<int64_t>(batch) + 1, sizeof(int32_t)));
  l.send = p.take(row_bytes);
  l.recv = p.take(product(world, row_bytes));
  MLAKV_REQUIRE(!p.overflowed(), "dcp::gather_context workspace for ", rows, " rows of ", desc.token_bytes(),
                " bytes over ", batch, " requests, world ", world, ", interleave ", interleave, ": more than ",
                WorkspacePlan::kMaxBytes, " bytes, expected sizes whose workspace fits in memory");
  l.total = p.used() + WorkspacePlan::kAlign;
  return l;
}

int64_t i32_at(const Tensor& t, int64_t i) { return static_cast<const int32_t*>(t.data)[i * t.stride[0]]; }

void check_index_vector(const Tensor& t, std::string_view name, Device dev, int64_t n) {
  detail::check_tensor(t, name, dev);
  detail::check_dtype(t, name, {DType::i32});
  detail::check_ndim(t, name, 1);
  detail::check_dim(t, name, 0, n);
}

// Chunks start on an I·W boundary, so each rank's part of a chunk is a contiguous run of its
// local indices starting at seq_start / W; those must be in the block table and name real blocks.
void check_host_indices(const Cache& cache, const Tensor& block_table, const Tensor& cu_seq_lens,
                        const Tensor& seq_starts, const Tensor& out, const DcpShard& shard) {
  const int64_t batch = seq_starts.shape[0], bs = cache.desc.block_size, max_blocks = block_table.shape[1];
  const int64_t step = static_cast<int64_t>(shard.interleave) * shard.world;
  MLAKV_REQUIRE(batch == 0 || i32_at(cu_seq_lens, 0) >= 0, "cu_seq_lens[0]: ", batch ? i32_at(cu_seq_lens, 0) : 0,
                ", expected >= 0");
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t lo = i32_at(cu_seq_lens, b), hi = i32_at(cu_seq_lens, b + 1), start = i32_at(seq_starts, b);
    MLAKV_REQUIRE(hi >= lo, "cu_seq_lens[", b + 1, "]: ", hi, " < cu_seq_lens[", b, "] = ", lo,
                  ", expected non-decreasing (a chunk length cannot be negative)");
    MLAKV_REQUIRE(hi <= out.shape[0], "cu_seq_lens[", b + 1, "]: ", hi, " rows, but out has ", out.shape[0], " rows (",
                  out.describe(), ")");
    MLAKV_REQUIRE(start >= 0 && start % step == 0, "seq_starts[", b, "]: ", start,
                  ", expected a non-negative multiple of interleave x world = ", shard.interleave, " x ", shard.world,
                  " = ", step, " (chunk boundaries must line up on every rank)");
    const int64_t first = start / shard.world;
    const int64_t n = local_length(hi - lo, shard.rank, shard.world, shard.interleave);
    if (n == 0) continue;
    MLAKV_REQUIRE(first + n <= detail::table_capacity(max_blocks, bs), "seq_starts[", b, "] + chunk length: ", start,
                  " + ", hi - lo, " puts local rows up to ", first + n, " on rank ", shard.rank,
                  ", beyond the block_table capacity of ", max_blocks, " blocks x ", bs, " = ",
                  detail::table_capacity(max_blocks, bs), " tokens");
    for (int64_t j = first / bs; j <= (first + n - 1) / bs; ++j) {
      const int64_t id = static_cast<const int32_t*>(block_table.data)[b * block_table.stride[0] + j];
      MLAKV_REQUIRE(id >= 0 && id < cache.desc.num_blocks, "block_table[", b, "][", j, "]: block id ", id,
                    ", expected in [0, ", cache.desc.num_blocks, ")");
    }
  }
}

}  // namespace

std::size_t gather_context_workspace_size(const CacheDesc& desc, int64_t max_rows, int batch, int world,
                                          int interleave) {
  // The descriptor and interleave as gather_context checks them: no size for a call it rejects.
  detail::validate_cache_desc(desc, "desc");
  MLAKV_REQUIRE(max_rows >= 0, "max_rows: ", max_rows, ", expected >= 0");
  MLAKV_REQUIRE(batch >= 0, "batch: ", batch, ", expected >= 0");
  MLAKV_REQUIRE(world >= 1, "world: ", world, ", expected >= 1");
  MLAKV_REQUIRE(interleave >= 1, "interleave: ", interleave, ", expected >= 1");
  check_shard({world, 0, interleave}, desc.block_size);
  return context_layout(desc, max_rows, batch, world, interleave).total;
}

void gather_context(Communicator& comm, const Cache& cache, const Tensor& block_table, const Tensor& cu_seq_lens,
                    const Tensor& seq_starts, const Tensor& out, int interleave, Workspace workspace,
                    Stream stream) {
  using namespace detail;
  const Device dev = comm.device();
  const DcpShard shard{comm.world(), comm.rank(), interleave};
  validate_cache(cache, "cache");
  MLAKV_REQUIRE(cache.device == dev, "cache is on ", cache.device.str(), ", expected ", dev.str(),
                " (the communicator's device)");
  check_shard(shard, cache.desc.block_size);
  check_tensor(seq_starts, "seq_starts", dev);
  check_ndim(seq_starts, "seq_starts", 1);
  const int64_t batch = seq_starts.shape[0];
  // The layout takes an int batch; cu_seq_lens has batch + 1 entries.
  MLAKV_REQUIRE(batch < std::numeric_limits<int>::max(), "seq_starts: ", seq_starts.describe(), " has ", batch,
                " requests, expected < ", std::numeric_limits<int>::max());
  check_index_vector(seq_starts, "seq_starts", dev, batch);
  check_index_vector(cu_seq_lens, "cu_seq_lens", dev, batch + 1);
  check_block_table(block_table, dev, batch);
  check_tensor(out, "out", dev);
  check_dtype(out, "out", {DType::bf16, DType::f32});
  check_ndim(out, "out", 2);
  check_dim(out, "out", 1, cache.desc.row_width());
  check_inner_contiguous(out, "out");
  MLAKV_REQUIRE(out.shape[0] <= 1 || out.stride[0] >= out.shape[1], "out: row stride ", out.stride[0], " of ",
                out.describe(), " makes rows overlap, expected >= ", out.shape[1]);

  const ContextLayout L = context_layout(cache.desc, out.shape[0], static_cast<int>(batch), shard.world, interleave);
  MLAKV_REQUIRE(workspace.bytes >= L.total, "workspace.bytes: ", workspace.bytes, ", expected >= ", L.total,
                " (dcp::gather_context_workspace_size(desc, ", out.shape[0], ", ", batch, ", ", shard.world, ", ",
                interleave, "))");
  MLAKV_REQUIRE(workspace.data != nullptr, "workspace.data: null, expected ", L.total, " bytes");
  // Every rank writes out and the workspace (the all-gather lands in it) while reading the cache.
  check_outputs_disjoint({byte_span(out, "out"), byte_span(workspace.data, L.total, dev, "workspace")},
                         {cache_span(cache), cache_scale_span(cache), byte_span(block_table, "block_table"),
                          byte_span(cu_seq_lens, "cu_seq_lens"), byte_span(seq_starts, "seq_starts")});
  if (dev.is_cpu()) check_host_indices(cache, block_table, cu_seq_lens, seq_starts, out, shard);
  const ops::Kernels& k = ops::kernels_for(dev, "dcp::gather_context");

  uint8_t* base = WorkspacePlan::aligned_base(workspace.data);
  auto* offsets = reinterpret_cast<int32_t*>(base + L.offsets);
  k.context_offsets(cu_seq_lens, shard.world, interleave, offsets, stream);
  k.pack_context(cache, block_table, cu_seq_lens, seq_starts, shard, offsets, base + L.send, L.capacity, stream);
  comm.all_gather(base + L.send, base + L.recv, static_cast<std::size_t>(L.capacity * cache.desc.token_bytes()),
                  stream);
  k.unpack_context(base + L.recv, L.capacity, cache.desc.format, cache.scale, cu_seq_lens, shard.world, interleave,
                   offsets, out, stream);
}

}  // namespace mlakv::dcp
