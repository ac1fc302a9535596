// CPU reference of ops 2 and 3 (gather_cache, gather_dequant_cache).
#include <vector>

#include "../backend.hpp"
#include "cache_codec.hpp"
#include "row_io.hpp"

namespace mlakv::cpu {
namespace {

// Calls fn(row, block, index_in_block) for every row [cu[0], cu[B]) of the packed output.
// A given token_to_seq is used as is (validation checked it against cu_seq_lens when it could),
// so that the reference exercises the same lookup a kernel makes.
template <class Fn>
void for_each_row(const Cache& cache, const Tensor& block_table, const Tensor& cu_seq_lens, const GatherOptions& opts,
                  Fn&& fn) {
  const CacheDesc& d = cache.desc;
  const auto* base = static_cast<const uint8_t*>(cache.data);
  const int64_t batch = cu_seq_lens.size(0) - 1;
  if (batch <= 0) return;
  auto emit = [&](int64_t b, int64_t row) {
    const int64_t start = opts.seq_starts ? rows::index_at(*opts.seq_starts, b) : 0;
    const int64_t pos = start + row - rows::index_at(cu_seq_lens, b);
    const int64_t block = rows::index_at(block_table, b, pos / d.block_size);
    fn(row, base + block * d.stride_bytes(), pos % d.block_size);
  };
  if (opts.token_to_seq) {
    const int64_t first = rows::index_at(cu_seq_lens, 0), last = rows::index_at(cu_seq_lens, batch);
    for (int64_t row = first; row < last; ++row) emit(rows::index_at(*opts.token_to_seq, row), row);
    return;
  }
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t row = rows::index_at(cu_seq_lens, b); row < rows::index_at(cu_seq_lens, b + 1); ++row) emit(b, row);
}

}  // namespace

void gather_cache(const Cache& cache, const Tensor& block_table, const Tensor& cu_seq_lens, const Tensor& dst,
                  const GatherOptions& opts) {
  for_each_row(cache, block_table, cu_seq_lens, opts, [&](int64_t row, const uint8_t* block, int64_t k) {
    codec::copy_token_bytes(cache.desc, block, k, rows::row_ptr(dst, row));
  });
}

void gather_dequant_cache(const Cache& cache, const Tensor& block_table, const Tensor& cu_seq_lens, const Tensor& dst,
                          const GatherOptions& opts) {
  const float scale = cache.desc.format == CacheFormat::fp8 ? *cache.scale : 1.0f;
  const int width = cache.desc.row_width();
  std::vector<float> values(static_cast<std::size_t>(width));
  for_each_row(cache, block_table, cu_seq_lens, opts, [&](int64_t row, const uint8_t* block, int64_t k) {
    codec::decode_token(cache.desc, block, k, scale, values.data());
    rows::store(dst, row, width, values.data());
  });
}

}  // namespace mlakv::cpu
