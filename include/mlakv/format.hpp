// MLA KV-cache formats (SPEC §2) and the descriptor of one paged cache.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "mlakv/tensor.hpp"

namespace mlakv {

enum class CacheFormat : uint8_t {
  bf16,        ///< 576 bf16 per token
  fp8,         ///< 576 e4m3 per token, one per-tensor float scale
  fp8_ds_mla,  ///< 512 e4m3 + 4 float tile scales + 64 bf16 rope = 656 bytes per token
  dsv4,        ///< DeepSeek-V4 block-wise: 448 e4m3 + 64 bf16 rope, 8 UE8M0 bytes per token
};

const char* format_name(CacheFormat f);
/// Parses "bf16", "fp8" (also "fp8_e4m3"), "fp8_ds_mla", "dsv4"; nullopt otherwise.
std::optional<CacheFormat> parse_format(std::string_view s);

/// MLA dimensions: latent L and rope R. Only L = 512, R = 64 are supported.
inline constexpr int kLatentDim = 512;
inline constexpr int kRopeDim = 64;
inline constexpr int kHeadDim = kLatentDim + kRopeDim;  // 576
/// DeepSeek-V4 head: 448 quantized + 64 rope = 512.
inline constexpr int kDsv4HeadDim = 512;
inline constexpr int kDsv4QuantDim = 448;
inline constexpr int kDsv4GroupSize = 64;
inline constexpr int kDsMlaTile = 128;

/// Byte layout of one token of a format within a block. All offsets in bytes from the block start.
struct TokenLayout {
  int64_t data_offset;   ///< start of the token's (quantized) values
  int64_t scale_offset;  ///< start of its scales (fp8_ds_mla, dsv4), else -1
  int64_t rope_offset;   ///< start of its bf16 rope values, or -1 where rope is stored like the latent
};

/// Describes one paged cache: `num_blocks` blocks of `block_size` tokens, `block_stride` bytes apart.
struct CacheDesc {
  CacheFormat format = CacheFormat::bf16;
  int64_t num_blocks = 0;
  int block_size = 64;
  /// Bytes from one block to the next; 0 picks the format's natural size (dsv4: rounded up to a
  /// multiple of 576, as vLLM allocates it).
  int64_t block_stride = 0;

  /// Stored bytes per token: 1152, 576, 656 or 584 (dsv4: 576 data + 8 scale).
  int64_t token_bytes() const;
  /// The natural block size in bytes, before any padding.
  int64_t dense_block_bytes() const;
  /// The effective stride (block_stride, or the natural one when 0).
  int64_t stride_bytes() const;
  int64_t capacity_tokens() const { return num_blocks * block_size; }
  int64_t total_bytes() const { return num_blocks * stride_bytes(); }
  /// Width of a dequantized row: 576, or 512 for dsv4.
  int row_width() const;
  TokenLayout token(int64_t index_in_block) const;
};

/// A paged cache in memory: the descriptor, where it lives, and for `fp8` the per-tensor scale
/// (one float in the same device's memory, so CUDA graphs can capture a changing scale).
struct Cache {
  void* data = nullptr;
  CacheDesc desc{};
  Device device{};
  const float* scale = nullptr;
};

}  // namespace mlakv
