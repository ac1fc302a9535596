// Host-memory caches and index tensors for the cache-op tests.
#pragma once

#include <algorithm>
#include <numeric>
#include <vector>

#include "test_util.hpp"

namespace mlakv::test {

/// A cache in host memory, its bytes prefilled with `fill` so that untouched bytes are visible.
struct HostCache {
  std::vector<uint8_t> bytes;
  float scale = 1.0f;
  Cache cache;

  HostCache(CacheFormat format, int64_t num_blocks, int block_size, int64_t block_stride = 0, uint8_t fill = 0xAB,
            float fp8_scale = 1.0f)
      : scale(fp8_scale) {
    cache.desc = {format, num_blocks, block_size, block_stride};
    bytes.assign(static_cast<std::size_t>(cache.desc.total_bytes()), fill);
    cache.data = bytes.data();
    cache.scale = &scale;
  }
  HostCache(const HostCache&) = delete;

  const uint8_t* block(int64_t b) const { return bytes.data() + b * cache.desc.stride_bytes(); }
  /// Start of slot s's data bytes.
  const uint8_t* token_data(int64_t slot) const {
    return block(slot / cache.desc.block_size) + cache.desc.token(slot % cache.desc.block_size).data_offset;
  }
};

/// Physical blocks handed out in a shuffled order, as an allocator would after churn.
inline std::vector<int32_t> shuffled_blocks(int64_t n) {
  std::vector<int32_t> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  std::shuffle(v.begin(), v.end(), rng());
  return v;
}

/// 1-D views of index vectors.
inline Tensor vec_i32(std::vector<int32_t>& v) { return Tensor(v.data(), DType::i32, {static_cast<int64_t>(v.size())}); }
inline Tensor vec_i64(std::vector<int64_t>& v) { return Tensor(v.data(), DType::i64, {static_cast<int64_t>(v.size())}); }

}  // namespace mlakv::test
