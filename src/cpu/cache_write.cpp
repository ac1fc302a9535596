// CPU reference of op 1 (write_cache / concat_and_cache_mla).
#include "../backend.hpp"
#include "cache_codec.hpp"
#include "row_io.hpp"

namespace mlakv::cpu {

void write_cache(const Tensor& kv_c, const Tensor& k_pe, const Tensor& slot_mapping, const Cache& cache) {
  const CacheDesc& d = cache.desc;
  // Validation guarantees a scale for fp8; other formats ignore it.
  const float scale = d.format == CacheFormat::fp8 ? *cache.scale : 1.0f;
  auto* base = static_cast<uint8_t*>(cache.data);
  float latent[kLatentDim], rope[kRopeDim];
  // T is slot_mapping's length: rows of kv_c beyond it are graph padding and never read.
  for (int64_t t = 0; t < slot_mapping.size(0); ++t) {
    const int64_t slot = rows::index_at(slot_mapping, t);
    if (slot < 0) continue;  // another rank's token (DCP) or padding
    rows::load(kv_c, t, kLatentDim, latent);
    rows::load(k_pe, t, kRopeDim, rope);
    codec::encode_mla_token(d, base + (slot / d.block_size) * d.stride_bytes(), slot % d.block_size, latent, rope,
                            scale);
  }
}

}  // namespace mlakv::cpu
