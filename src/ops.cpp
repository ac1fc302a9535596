// Public ops: validate once, then hand over to the backend of the tensors' device.
#include "mlakv/ops.hpp"

#include <limits>

#include "backend.hpp"
#include "check.hpp"
#include "validate.hpp"

namespace mlakv {
namespace {

[[noreturn, maybe_unused]] void no_cuda(Device d) {
  detail::fail("tensors are on ", d.str(), " but this build of mlakv has no CUDA backend (configure with -DMLAKV_CUDA=ON)");
}

// Runs the CPU or CUDA implementation for `device`.
template <class CpuFn, class CudaFn> void dispatch(Device device, CpuFn&& on_cpu, [[maybe_unused]] CudaFn&& on_cuda) {
  if (device.is_cpu()) return on_cpu();
#if MLAKV_WITH_CUDA
  cuda::set_device(device);
  on_cuda();
#else
  no_cuda(device);
#endif
}

}  // namespace

void write_cache(const Tensor& kv_c, const Tensor& k_pe, const Tensor& slot_mapping, const Cache& cache,
                 Stream stream) {
  const Device d = detail::validate_write_cache(kv_c, k_pe, slot_mapping, cache);
  dispatch(d, [&] { cpu::write_cache(kv_c, k_pe, slot_mapping, cache); },
           [&] { cuda::write_cache(kv_c, k_pe, slot_mapping, cache, stream); });
}

void gather_cache(const Cache& cache, const Tensor& block_table, const Tensor& cu_seq_lens, const Tensor& dst,
                  const GatherOptions& opts, Stream stream) {
  const Device d = detail::validate_gather_cache(cache, block_table, cu_seq_lens, dst, opts);
  dispatch(d, [&] { cpu::gather_cache(cache, block_table, cu_seq_lens, dst, opts); },
           [&] { cuda::gather_cache(cache, block_table, cu_seq_lens, dst, opts, stream); });
}

void gather_dequant_cache(const Cache& cache, const Tensor& block_table, const Tensor& cu_seq_lens,
                          const Tensor& dst, const GatherOptions& opts, Stream stream) {
  const Device d = detail::validate_gather_dequant_cache(cache, block_table, cu_seq_lens, dst, opts);
  dispatch(d, [&] { cpu::gather_dequant_cache(cache, block_table, cu_seq_lens, dst, opts); },
           [&] { cuda::gather_dequant_cache(cache, block_table, cu_seq_lens, dst, opts, stream); });
}

void dsv4_write(const Tensor& k, const Tensor& slot_mapping, const Cache& cache, Stream stream) {
  const Device d = detail::validate_dsv4_write(k, slot_mapping, cache);
  dispatch(d, [&] { cpu::dsv4_write(k, slot_mapping, cache); },
           [&] { cuda::dsv4_write(k, slot_mapping, cache, stream); });
}

void dsv4_dequant_gather(const Cache& cache, const Tensor& block_table, const Tensor& seq_lens, const Tensor& out,
                         const std::optional<Tensor>& gather_lens, int64_t offset, Stream stream) {
  const Device d = detail::validate_dsv4_dequant_gather(cache, block_table, seq_lens, out, gather_lens, offset);
  dispatch(d, [&] { cpu::dsv4_dequant_gather(cache, block_table, seq_lens, out, gather_lens, offset); },
           [&] { cuda::dsv4_dequant_gather(cache, block_table, seq_lens, out, gather_lens, offset, stream); });
}

std::size_t mla_decode_workspace_size(int batch, int s_q, int heads, Device device) {
  MLAKV_REQUIRE(batch >= 0, "batch: ", batch, ", expected >= 0");
  MLAKV_REQUIRE(s_q >= 1, "s_q: ", s_q, ", expected >= 1");
  MLAKV_REQUIRE(heads >= 1, "heads: ", heads, ", expected >= 1");
  MLAKV_REQUIRE(static_cast<int64_t>(s_q) * heads <= std::numeric_limits<int>::max(), "s_q x heads: ", s_q, " x ",
                heads, " = ", static_cast<int64_t>(s_q) * heads, " query rows, expected <= ",
                std::numeric_limits<int>::max());
  if (device.is_cpu()) return 0;
#if MLAKV_WITH_CUDA
  return cuda::mla_decode_workspace_size(batch, s_q, heads, device.index);
#else
  no_cuda(device);
#endif
}

void mla_decode(const Tensor& q, const Cache& cache, const Tensor& block_table, const Tensor& seq_lens,
                const Tensor& out, const Tensor& lse, const DecodeParams& params, Workspace workspace,
                Stream stream) {
  const Device d = detail::validate_mla_decode(q, cache, block_table, seq_lens, out, lse, params, workspace);
  dispatch(d, [&] { cpu::mla_decode(q, cache, block_table, seq_lens, out, lse, params, workspace); },
           [&] { cuda::mla_decode(q, cache, block_table, seq_lens, out, lse, params, workspace, stream); });
}

void merge_states(const Tensor& o_a, const Tensor& lse_a, const Tensor& o_b, const Tensor& lse_b, const Tensor& o,
                  const Tensor& lse, Stream stream) {
  const Device d = detail::validate_merge_states(o_a, lse_a, o_b, lse_b, o, lse);
  dispatch(d, [&] { cpu::merge_states(o_a, lse_a, o_b, lse_b, o, lse); },
           [&] { cuda::merge_states(o_a, lse_a, o_b, lse_b, o, lse, stream); });
}

}  // namespace mlakv
