// One validation layer for both backends (SPEC §5). Each function throws mlakv::Error naming the
// argument, its value and what was expected; it reads host-visible index tensors (slot ids, block
// ids, lengths) only when they live on the CPU. Returns the device the op runs on.
#pragma once

#include <optional>

#include "check.hpp"
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
/// A cache descriptor: format, num_blocks, block_size, block_stride (their sizes and alignment);
/// `name` prefixes the fields in messages ("cache.desc").
void validate_cache_desc(const CacheDesc& desc, std::string_view name);
/// A cache: its descriptor (as validate_cache_desc, named `name`.desc), data and scale.
void validate_cache(const Cache& cache, std::string_view name);
/// The cache's blocks ("cache"), and its scale ("cache.scale", a float read for fp8; no span
/// for the other formats), for check_outputs_disjoint. The cache must have passed validate_cache.
ByteSpan cache_span(const Cache& cache);
ByteSpan cache_scale_span(const Cache& cache);

}  // namespace mlakv::detail
