// The two backends behind the public ops. Arguments arrive validated (validate.hpp): backends
// never re-check them. cpu:: runs synchronously on the calling thread; cuda:: enqueues on the
// stream of the tensors' device and never synchronizes the host.
#pragma once

#include <optional>

#include "mlakv/dcp.hpp"
#include "mlakv/ops.hpp"

namespace mlakv {

#define MLAKV_BACKEND_OPS(STREAM_ARG)                                                                              \
  void write_cache(const Tensor& kv_c, const Tensor& k_pe, const Tensor& slot_mapping, const Cache& cache STREAM_ARG); \
  void gather_cache(const Cache& cache, const Tensor& block_table, const Tensor& cu_seq_lens, const Tensor& dst,     \
                    const GatherOptions& opts STREAM_ARG);                                                           \
  void gather_dequant_cache(const Cache& cache, const Tensor& block_table, const Tensor& cu_seq_lens,               \
                            const Tensor& dst, const GatherOptions& opts STREAM_ARG);                                \
  void dsv4_write(const Tensor& k, const Tensor& slot_mapping, const Cache& cache STREAM_ARG);                      \
  void dsv4_dequant_gather(const Cache& cache, const Tensor& block_table, const Tensor& seq_lens, const Tensor& out, \
                           const std::optional<Tensor>& gather_lens, int64_t offset STREAM_ARG);                     \
  void mla_decode(const Tensor& q, const Cache& cache, const Tensor& block_table, const Tensor& seq_lens,           \
                  const Tensor& out, const Tensor& lse, const DecodeParams& params, Workspace workspace STREAM_ARG); \
  void merge_states(const Tensor& o_a, const Tensor& lse_a, const Tensor& o_b, const Tensor& lse_b, const Tensor& o, \
                    const Tensor& lse STREAM_ARG);

#define MLAKV_NO_STREAM
#define MLAKV_WITH_STREAM , Stream stream

namespace cpu {
MLAKV_BACKEND_OPS(MLAKV_NO_STREAM)
}  // namespace cpu

namespace cuda {
MLAKV_BACKEND_OPS(MLAKV_WITH_STREAM)
std::size_t mla_decode_workspace_size(int batch, int s_q, int heads, int device_index);
/// Makes `device` current on the calling thread (throws mlakv::Error on failure).
void set_device(Device device);
/// cudaMalloc'd memory on `device` as a CommBuffer (not symmetric).
std::unique_ptr<CommBuffer> plain_comm_buffer(Device device, std::size_t bytes);
}  // namespace cuda

}  // namespace mlakv
