// CPU reference of ops 4 and 5 (DeepSeek-V4 quantize_and_insert_k_cache and
// dequantize_and_gather_k_cache).
#include "../backend.hpp"
#include "cache_codec.hpp"
#include "row_io.hpp"

namespace mlakv::cpu {

void dsv4_write(const Tensor& k, const Tensor& slot_mapping, const Cache& cache) {
  const CacheDesc& d = cache.desc;
  auto* base = static_cast<uint8_t*>(cache.data);
  float row[kDsv4HeadDim];
  for (int64_t t = 0; t < slot_mapping.size(0); ++t) {
    const int64_t slot = rows::index_at(slot_mapping, t);
    if (slot < 0) continue;
    rows::load(k, t, kDsv4HeadDim, row);
    codec::encode_dsv4_token(d, base + (slot / d.block_size) * d.stride_bytes(), slot % d.block_size, row);
  }
}

void dsv4_dequant_gather(const Cache& cache, const Tensor& block_table, const Tensor& seq_lens, const Tensor& out,
                         const std::optional<Tensor>& gather_lens, int64_t offset) {
  const CacheDesc& d = cache.desc;
  const auto* base = static_cast<const uint8_t*>(cache.data);
  // Sized for any format: the compiler cannot see that decode_token only takes its dsv4 branch.
  float row[kHeadDim];
  for (int64_t r = 0; r < seq_lens.size(0); ++r) {
    const int64_t seq_len = rows::index_at(seq_lens, r);
    const int64_t n = gather_lens ? rows::index_at(*gather_lens, r) : seq_len;
    // Output rows of request r, as a 2-D view [max_rows, 512].
    Tensor req = out;
    req.data = static_cast<uint8_t*>(out.data) + r * out.stride[0] * 2;
    req.ndim = 2;
    req.shape = {out.shape[1], out.shape[2]};
    req.stride = {out.stride[1], out.stride[2]};
    for (int64_t i = 0; i < n; ++i) {
      const int64_t pos = seq_len - n + i;  // the last n tokens
      const int64_t block = rows::index_at(block_table, r, pos / d.block_size);
      codec::decode_token(d, base + block * d.stride_bytes(), pos % d.block_size, 1.0f, row);
      rows::store(req, offset + i, kDsv4HeadDim, row);
    }
  }
}

}  // namespace mlakv::cpu
