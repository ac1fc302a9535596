// One validation layer for both backends (SPEC §5). Each function throws mlakv::Error naming the
// argument, its value and what was expected; it reads host-visible index tensors (slot ids, block
// ids, lengths) only when they live on the CPU. Returns the device the op runs on.
#pragma once

#include <optional>

#include "mlakv/ops.hpp"

namespace mlakv::detail {

Device validate_write_cache(const Tensor& kv_c, const Tensor& k_pe, const Tensor& slot_mapping, const Cache& cache);
Device validate_gather_cache(const Cache& cache, const Tensor& block_table, const Tensor& cu_seq_lens,
                             const Tensor& dst, const GatherOptions& opts);
Device validate_gather_dequant_cache(const Cache& cache, const Tensor& block_table, const Tensor& cu_seq_lens,
                                     const Tensor& dst, const GatherOptions& opts);
Device validate_dsv4_write(const Tensor& k, const Tensor& slot_mapping, const Cache& cache);
Device validate_dsv4_dequant_gather(const Cache& cache, const Tensor& block_table, const Tensor& seq_lens,
                                    const Tensor& out, const std::optional<Tensor>& gather_lens, int64_t offset);
Device validate_mla_decode(const Tensor& q, const Cache& cache, const Tensor& block_table, const Tensor& seq_lens,
                           const Tensor& out, const Tensor& lse, const DecodeParams& params, Workspace workspace);
Device validate_merge_states(const Tensor& o_a, const Tensor& lse_a, const Tensor& o_b, const Tensor& lse_b,
                             const Tensor& o, const Tensor& lse);
/// Cache descriptor itself: format, num_blocks, block_size, block_stride, data, scale.
void validate_cache(const Cache& cache, std::string_view name);

}  // namespace mlakv::detail
