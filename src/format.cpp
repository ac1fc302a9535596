#include "mlakv/format.hpp"

#include "check.hpp"

namespace mlakv {

const char* format_name(CacheFormat f) {
  switch (f) {
    case CacheFormat::bf16: return "bf16";
    case CacheFormat::fp8: return "fp8";
    case CacheFormat::fp8_ds_mla: return "fp8_ds_mla";
    case CacheFormat::dsv4: return "dsv4";
  }
  return "?";
}

std::optional<CacheFormat> parse_format(std::string_view s) {
  if (s == "bf16" || s == "auto") return CacheFormat::bf16;
  if (s == "fp8" || s == "fp8_e4m3") return CacheFormat::fp8;
  if (s == "fp8_ds_mla") return CacheFormat::fp8_ds_mla;
  if (s == "dsv4") return CacheFormat::dsv4;
  return std::nullopt;
}

int64_t CacheDesc::token_bytes() const {
  switch (format) {
    case CacheFormat::bf16: return 2 * kHeadDim;
    case CacheFormat::fp8: return kHeadDim;
    case CacheFormat::fp8_ds_mla: return kLatentDim + 4 * 4 + 2 * kRopeDim;
    case CacheFormat::dsv4: return kDsv4QuantDim + 2 * kRopeDim + 8;
  }
  return 0;
}

int64_t CacheDesc::dense_block_bytes() const { return token_bytes() * block_size; }

int64_t CacheDesc::stride_bytes() const {
  if (block_stride > 0) return block_stride;
  const int64_t dense = dense_block_bytes();
  if (format == CacheFormat::dsv4) return (dense + kHeadDim - 1) / kHeadDim * kHeadDim;
  return dense;
}

int CacheDesc::row_width() const { return format == CacheFormat::dsv4 ? kDsv4HeadDim : kHeadDim; }

TokenLayout CacheDesc::token(int64_t k) const {
  switch (format) {
    case CacheFormat::bf16:
    case CacheFormat::fp8: return {k * token_bytes(), -1, -1};
    case CacheFormat::fp8_ds_mla: {
      const int64_t base = k * token_bytes();
      return {base, base + kLatentDim, base + kLatentDim + 16};
    }
    case CacheFormat::dsv4: {
      const int64_t data = k * (kDsv4QuantDim + 2 * kRopeDim);
      return {data, static_cast<int64_t>(block_size) * (kDsv4QuantDim + 2 * kRopeDim) + 8 * k, data + kDsv4QuantDim};
    }
  }
  return {0, -1, -1};
}

}  // namespace mlakv
