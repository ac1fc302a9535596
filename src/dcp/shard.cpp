// Token sharding: the shard checks and the DCP slot mapping (SPEC §4).
#include "check.hpp"
#include "dcp/dcp_ops.hpp"
#include "mlakv/dcp.hpp"

namespace mlakv::dcp {

void check_shard(const DcpShard& shard, int block_size) {
  MLAKV_REQUIRE(shard.world >= 1, "shard.world: ", shard.world, ", expected >= 1");
  MLAKV_REQUIRE(shard.rank >= 0 && shard.rank < shard.world, "shard.rank: ", shard.rank, ", expected in [0, ",
                shard.world, ")");
  MLAKV_REQUIRE(shard.interleave >= 1, "shard.interleave: ", shard.interleave, ", expected >= 1");
  MLAKV_REQUIRE(block_size >= 1, "block_size: ", block_size, ", expected >= 1");
  // A block must hold whole interleave runs so that a run's local indices stay in one block.
  MLAKV_REQUIRE(block_size % shard.interleave == 0, "shard.interleave: ", shard.interleave,
                ", expected a divisor of the cache block_size ", block_size);
}

void slot_mapping(const Tensor& positions, const Tensor& token_to_req, const Tensor& block_table, int block_size,
                  const DcpShard& shard, const Tensor& slot_mapping, Stream stream) {
  using namespace detail;
  check_shard(shard, block_size);
  const Device dev = positions.device;
  check_tensor(positions, "positions", dev);
  check_dtype(positions, "positions", {DType::i64});
  check_ndim(positions, "positions", 1);
  const int64_t tokens = positions.shape[0];
  check_tensor(token_to_req, "token_to_req", dev);
  check_dtype(token_to_req, "token_to_req", {DType::i32});
  check_ndim(token_to_req, "token_to_req", 1);
  check_dim(token_to_req, "token_to_req", 0, tokens);
  check_block_table(block_table, dev, -1);
  check_tensor(slot_mapping, "slot_mapping", dev);
  check_dtype(slot_mapping, "slot_mapping", {DType::i64});
  check_ndim(slot_mapping, "slot_mapping", 1);
  check_dim(slot_mapping, "slot_mapping", 0, tokens);
  check_no_self_overlap(slot_mapping, "slot_mapping");
  check_outputs_disjoint({byte_span(slot_mapping, "slot_mapping")},
                         {byte_span(positions, "positions"), byte_span(token_to_req, "token_to_req"),
                          byte_span(block_table, "block_table")});

  if (dev.is_cpu()) {
    const int64_t batch = block_table.shape[0], max_blocks = block_table.shape[1];
    for (int64_t t = 0; t < tokens; ++t) {
      const int64_t pos = static_cast<const int64_t*>(positions.data)[t * positions.stride[0]];
      const int64_t req = static_cast<const int32_t*>(token_to_req.data)[t * token_to_req.stride[0]];
      if (pos < 0 || req < 0) continue;  // padding
      MLAKV_REQUIRE(req < batch, "token_to_req[", t, "]: ", req, ", expected < ", batch,
                    " (rows of block_table) or negative for padding");
      if (owner(pos, shard.world, shard.interleave) != shard.rank) continue;
      const int64_t j = local_index(pos, shard.world, shard.interleave);
      MLAKV_REQUIRE(j / block_size < max_blocks, "positions[", t, "]: ", pos, " is local index ", j, " on rank ",
                    shard.rank, ", beyond the block_table capacity of ", max_blocks, " blocks x ", block_size,
                    " tokens");
      const int64_t id = static_cast<const int32_t*>(block_table.data)[req * block_table.stride[0] + j / block_size];
      MLAKV_REQUIRE(id >= 0, "block_table[", req, "][", j / block_size, "]: block id ", id,
                    ", expected >= 0 (used by positions[", t, "] = ", pos, ")");
    }
  }
  ops::kernels_for(dev, "dcp::slot_mapping").slot_mapping(positions, token_to_req, block_table, block_size, shard,
                                                          slot_mapping, stream);
}

}  // namespace mlakv::dcp
