// Validation of the cache ops 1-5 (SPEC §5), shared by the CPU and CUDA backends. Index tensors
// (slot ids, block ids, lengths) are read only when they live on the host; on a GPU the kernels
// skip or clamp what the host could not check.
#include <cmath>
#include <limits>
#include <string>

#include "check.hpp"
#include "mlakv/numeric.hpp"
#include "validate.hpp"

namespace mlakv::detail {
namespace {

int64_t int_at(const Tensor& t, int64_t i) {
  if (t.dtype == DType::i64) return static_cast<const int64_t*>(t.data)[i * t.stride[0]];
  return static_cast<const int32_t*>(t.data)[i * t.stride[0]];
}

int64_t int_at(const Tensor& t, int64_t i, int64_t j) {
  return static_cast<const int32_t*>(t.data)[i * t.stride[0] + j * t.stride[1]];
}

std::string arg(std::string_view base, std::string_view field) { return std::string(base) + "." + std::string(field); }

// Scales and rope are read as float / bf16 in place: each block must keep them aligned.
int64_t field_alignment(CacheFormat f) { return f == CacheFormat::fp8_ds_mla ? 4 : (f == CacheFormat::fp8 ? 1 : 2); }

// Rejects (L, R) other than (512, 64) with the reason, rather than a bare dimension mismatch.
void check_width(const Tensor& t, std::string_view name, int64_t expected, std::string_view what) {
  MLAKV_REQUIRE(t.shape[1] == expected, name, ": ", what, " width ", t.shape[1], " (", t.describe(), "), expected ",
                expected, " (mlakv supports L = ", kLatentDim, ", R = ", kRopeDim, " only)");
}

void check_index_vector(const Tensor& t, std::string_view name, Device device, DType dtype) {
  check_tensor(t, name, device);
  check_dtype(t, name, {dtype});
  check_ndim(t, name, 1);
  check_inner_contiguous(t, name);
}

// A destination whose rows must not overlap: row stride at least the row width.
void check_rows_disjoint(const Tensor& t, std::string_view name, int dim, int64_t row_elems) {
  MLAKV_REQUIRE(t.shape[dim] <= 1 || t.stride[dim] >= row_elems, name, ": stride ", t.stride[dim], " of dimension ",
                dim, " of ", t.describe(), " makes rows overlap, expected >= ", row_elems);
}

void check_slots(const Tensor& slot_mapping, const Cache& cache) {
  if (!slot_mapping.device.is_cpu()) return;
  const int64_t cap = cache.desc.capacity_tokens();
  for (int64_t t = 0; t < slot_mapping.size(0); ++t) {
    const int64_t s = int_at(slot_mapping, t);
    MLAKV_REQUIRE(s < cap, "slot_mapping[", t, "]: slot ", s, " is outside the cache, expected < ", cap, " (",
                  cache.desc.num_blocks, " blocks of ", cache.desc.block_size, ") or negative to skip");
  }
}

// Logical positions [first, first + n) of request b must map through its block-table row to
// physical blocks that exist.
void check_positions(const Cache& cache, const Tensor& block_table, int64_t b, int64_t first, int64_t n,
                     std::string_view what) {
  if (n <= 0) return;
  const int64_t bs = cache.desc.block_size;
  const int64_t max_blocks = block_table.size(1), cap = table_capacity(max_blocks, bs);
  MLAKV_REQUIRE(first + n <= cap, what, " of request ", b, " ends at position ", first + n,
                ", beyond the block_table capacity of ", max_blocks, " blocks x ", bs, " = ", cap, " tokens");
  for (int64_t j = first / bs; j <= (first + n - 1) / bs; ++j) {
    const int64_t id = int_at(block_table, b, j);
    MLAKV_REQUIRE(id >= 0 && id < cache.desc.num_blocks, "block_table[", b, "][", j, "]: block id ", id,
                  ", expected in [0, ", cache.desc.num_blocks, ")");
  }
}

// The addressing shared by gather_cache and gather_dequant_cache; `row_elems` is dst's row width.
Device validate_gather_common(const Cache& cache, const Tensor& block_table, const Tensor& cu_seq_lens,
                              const Tensor& dst, const GatherOptions& opts, int64_t row_elems) {
  validate_cache(cache, "cache");
  const Device dev = cache.device;
  check_index_vector(cu_seq_lens, "cu_seq_lens", dev, DType::i32);
  MLAKV_REQUIRE(cu_seq_lens.size(0) >= 1, "cu_seq_lens: ", cu_seq_lens.describe(),
                " is empty, expected batch + 1 >= 1 entries");
  const int64_t batch = cu_seq_lens.size(0) - 1;
  check_block_table(block_table, dev, batch);
  check_tensor(dst, "dst", dev);
  check_ndim(dst, "dst", 2);
  check_dim(dst, "dst", 1, row_elems);
  check_inner_contiguous(dst, "dst");
  check_rows_disjoint(dst, "dst", 0, row_elems);
  if (opts.seq_starts) {
    check_index_vector(*opts.seq_starts, "seq_starts", dev, DType::i32);
    check_dim(*opts.seq_starts, "seq_starts", 0, batch);
  }
  if (opts.token_to_seq) {
    check_index_vector(*opts.token_to_seq, "token_to_seq", dev, DType::i32);
    check_dim(*opts.token_to_seq, "token_to_seq", 0, dst.size(0));
  }
  check_outputs_disjoint({byte_span(dst, "dst")},
                         {cache_span(cache), cache_scale_span(cache), byte_span(block_table, "block_table"),
                          byte_span(cu_seq_lens, "cu_seq_lens"), byte_span(opts.seq_starts, "seq_starts"),
                          byte_span(opts.token_to_seq, "token_to_seq")});
  if (!dev.is_cpu() || batch == 0) return dev;

  const int64_t rows = dst.size(0);
  MLAKV_REQUIRE(int_at(cu_seq_lens, 0) >= 0, "cu_seq_lens[0]: ", int_at(cu_seq_lens, 0), ", expected >= 0");
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t lo = int_at(cu_seq_lens, b), hi = int_at(cu_seq_lens, b + 1);
    MLAKV_REQUIRE(hi >= lo, "cu_seq_lens[", b + 1, "]: ", hi, " < cu_seq_lens[", b, "] = ", lo,
                  ", expected non-decreasing (a sequence length cannot be negative)");
    MLAKV_REQUIRE(hi <= rows, "cu_seq_lens[", b + 1, "]: ", hi, " rows, but dst has ", rows, " rows (", dst.describe(),
                  ")");
    const int64_t start = opts.seq_starts ? int_at(*opts.seq_starts, b) : 0;
    MLAKV_REQUIRE(start >= 0, "seq_starts[", b, "]: ", start, ", expected >= 0");
    check_positions(cache, block_table, b, start, hi - lo, "gathered range");
    if (opts.token_to_seq)
      for (int64_t r = lo; r < hi; ++r)
        MLAKV_REQUIRE(int_at(*opts.token_to_seq, r) == b, "token_to_seq[", r, "]: ", int_at(*opts.token_to_seq, r),
                      ", expected ", b, " (row ", r, " lies in [cu_seq_lens[", b, "], cu_seq_lens[", b + 1, "]) = [",
                      lo, ", ", hi, "))");
  }
  return dev;
}

}  // namespace

void validate_cache_desc(const CacheDesc& d, std::string_view name) {
  MLAKV_REQUIRE(d.format == CacheFormat::bf16 || d.format == CacheFormat::fp8 || d.format == CacheFormat::fp8_ds_mla ||
              d.format == CacheFormat::dsv4,
                arg(name, "format"), ": unknown format code ", static_cast<int>(d.format),
                ", expected bf16, fp8, fp8_ds_mla or dsv4");
  MLAKV_REQUIRE(d.num_blocks >= 0, arg(name, "num_blocks"), ": ", d.num_blocks, ", expected >= 0");
  MLAKV_REQUIRE(d.block_size >= 1, arg(name, "block_size"), ": ", d.block_size, ", expected >= 1");
  MLAKV_REQUIRE(d.block_stride == 0 || d.block_stride >= d.dense_block_bytes(), arg(name, "block_stride"), ": ",
                d.block_stride, " bytes, expected 0 (natural) or >= ", d.dense_block_bytes(), " (", d.block_size,
                " tokens of format ", format_name(d.format), ")");
  MLAKV_REQUIRE(d.stride_bytes() % field_alignment(d.format) == 0, arg(name, "block_stride"), ": ", d.stride_bytes(),
                " bytes, expected a multiple of ", field_alignment(d.format), " for format ", format_name(d.format));
  // Slots and block offsets are int64: every byte of the cache (so every slot) must be addressable.
  const int64_t max_blocks = std::numeric_limits<int64_t>::max() / d.stride_bytes();
  MLAKV_REQUIRE(d.num_blocks <= max_blocks, arg(name, "num_blocks"), ": ", d.num_blocks, " blocks of ",
                d.stride_bytes(), " bytes overflow a 64-bit byte offset, expected <= ", max_blocks);
}

void validate_cache(const Cache& cache, std::string_view name) {
  const CacheDesc& d = cache.desc;
  validate_cache_desc(d, arg(name, "desc"));
  const int64_t align = field_alignment(d.format);
  MLAKV_REQUIRE(reinterpret_cast<std::uintptr_t>(cache.data) % static_cast<std::uintptr_t>(align) == 0,
                arg(name, "data"), ": address ", cache.data, " is not ", align, "-byte aligned, as format ",
                format_name(d.format), " needs");
  MLAKV_REQUIRE(cache.data != nullptr || d.num_blocks == 0, arg(name, "data"), ": null pointer for ", d.num_blocks,
                " blocks");
  if (d.format == CacheFormat::fp8) {
    check_scale_pointer(cache.scale, arg(name, "scale"), "the per-tensor float scale (format fp8)", cache.device.is_cpu());
  }
}

ByteSpan cache_span(const Cache& cache) {
  return byte_span(cache.data, static_cast<std::size_t>(cache.desc.total_bytes()), cache.device, "cache");
}

ByteSpan cache_scale_span(const Cache& cache) {
  const bool read = cache.desc.format == CacheFormat::fp8;
  return byte_span(cache.scale, read ? sizeof(float) : 0, cache.device, "cache.scale");
}

Device validate_write_cache(const Tensor& kv_c, const Tensor& k_pe, const Tensor& slot_mapping, const Cache& cache) {
  validate_cache(cache, "cache");
  MLAKV_REQUIRE(cache.desc.format != CacheFormat::dsv4,
                "cache.desc.format: dsv4, expected bf16, fp8 or fp8_ds_mla (dsv4 caches are written by dsv4_write)");
  const Device dev = cache.device;
  check_index_vector(slot_mapping, "slot_mapping", dev, DType::i64);
  const int64_t tokens = slot_mapping.size(0);
  const struct {
    const Tensor& t;
    const char* name;
    int width;
    const char* what;
  } inputs[] = {{kv_c, "kv_c", kLatentDim, "latent (L)"}, {k_pe, "k_pe", kRopeDim, "rope (R)"}};
  for (const auto& in : inputs) {
    check_tensor(in.t, in.name, dev);
    check_dtype(in.t, in.name, {DType::bf16, DType::f32});
    check_ndim(in.t, in.name, 2);
    check_width(in.t, in.name, in.width, in.what);
    check_inner_contiguous(in.t, in.name);
    MLAKV_REQUIRE(in.t.size(0) >= tokens, in.name, ": ", in.t.size(0), " rows (", in.t.describe(), "), expected >= ",
                  tokens, " (the length of slot_mapping)");
  }
  check_outputs_disjoint({cache_span(cache)}, {byte_span(kv_c, "kv_c"), byte_span(k_pe, "k_pe"),
                                               byte_span(slot_mapping, "slot_mapping"), cache_scale_span(cache)});
  check_slots(slot_mapping, cache);
  return dev;
}

Device validate_gather_cache(const Cache& cache, const Tensor& block_table, const Tensor& cu_seq_lens,
                             const Tensor& dst, const GatherOptions& opts) {
  const CacheDesc& d = cache.desc;
  // A raw copy is only meaningful into the cache's own storage type.
  bool ok = dst.dtype == DType::u8;
  int64_t width = d.token_bytes();
  if (d.format == CacheFormat::bf16 && dst.dtype == DType::bf16) ok = true, width = kHeadDim;
  if (d.format == CacheFormat::fp8 && dst.dtype == DType::e4m3) ok = true;
  if (!ok) {
    const char* expected = d.format == CacheFormat::bf16  ? "bf16 [rows, 576] or u8 [rows, 1152]"
                           : d.format == CacheFormat::fp8 ? "e4m3 or u8 [rows, 576]"
                                                          : "u8 [rows, token_bytes]";
    fail("dst: dtype ", dtype_name(dst.dtype), " (", dst.describe(), ") does not match the storage of a ",
         format_name(d.format), " cache, expected ", expected,
         "; use gather_dequant_cache to convert");
  }
  return validate_gather_common(cache, block_table, cu_seq_lens, dst, opts, width);
}

Device validate_gather_dequant_cache(const Cache& cache, const Tensor& block_table, const Tensor& cu_seq_lens,
                                     const Tensor& dst, const GatherOptions& opts) {
  check_dtype(dst, "dst", {DType::bf16, DType::f32});
  return validate_gather_common(cache, block_table, cu_seq_lens, dst, opts, cache.desc.row_width());
}

Device validate_dsv4_write(const Tensor& k, const Tensor& slot_mapping, const Cache& cache) {
  validate_cache(cache, "cache");
  MLAKV_REQUIRE(cache.desc.format == CacheFormat::dsv4, "cache.desc.format: ", format_name(cache.desc.format),
                ", expected dsv4 (other formats are written by write_cache)");
  const Device dev = cache.device;
  check_index_vector(slot_mapping, "slot_mapping", dev, DType::i64);
  check_tensor(k, "k", dev);
  check_dtype(k, "k", {DType::bf16});
  check_ndim(k, "k", 2);
  check_dim(k, "k", 1, kDsv4HeadDim);
  check_inner_contiguous(k, "k");
  MLAKV_REQUIRE(k.size(0) >= slot_mapping.size(0), "k: ", k.size(0), " rows (", k.describe(), "), expected >= ",
                slot_mapping.size(0), " (the length of slot_mapping)");
  check_outputs_disjoint({cache_span(cache)}, {byte_span(k, "k"), byte_span(slot_mapping, "slot_mapping")});
  check_slots(slot_mapping, cache);
  return dev;
}

Device validate_dsv4_dequant_gather(const Cache& cache, const Tensor& block_table, const Tensor& seq_lens,
                                    const Tensor& out, const std::optional<Tensor>& gather_lens, int64_t offset) {
  validate_cache(cache, "cache");
  MLAKV_REQUIRE(cache.desc.format == CacheFormat::dsv4, "cache.desc.format: ", format_name(cache.desc.format),
                ", expected dsv4 (use gather_dequant_cache for other formats)");
  const Device dev = cache.device;
  check_index_vector(seq_lens, "seq_lens", dev, DType::i32);
  const int64_t reqs = seq_lens.size(0);
  check_block_table(block_table, dev, reqs);
  check_tensor(out, "out", dev);
  check_dtype(out, "out", {DType::bf16});
  check_ndim(out, "out", 3);
  check_dim(out, "out", 0, reqs);
  check_dim(out, "out", 2, kDsv4HeadDim);
  check_inner_contiguous(out, "out");
  check_rows_disjoint(out, "out", 1, kDsv4HeadDim);
  check_rows_disjoint(out, "out", 0, out.size(1) * out.stride[1]);
  if (gather_lens) {
    check_index_vector(*gather_lens, "gather_lens", dev, DType::i32);
    check_dim(*gather_lens, "gather_lens", 0, reqs);
  }
  MLAKV_REQUIRE(offset >= 0, "offset: ", offset, ", expected >= 0");
  const int64_t max_rows = out.size(1);
  MLAKV_REQUIRE(offset <= max_rows, "offset: ", offset, ", expected <= max_rows = ", max_rows, " (", out.describe(),
                ")");
  check_outputs_disjoint({byte_span(out, "out")}, {cache_span(cache), byte_span(block_table, "block_table"),
                                                   byte_span(seq_lens, "seq_lens"), byte_span(gather_lens, "gather_lens")});
  if (!dev.is_cpu()) return dev;
  for (int64_t r = 0; r < reqs; ++r) {
    const int64_t len = int_at(seq_lens, r);
    MLAKV_REQUIRE(len >= 0, "seq_lens[", r, "]: ", len, ", expected >= 0");
    const int64_t n = gather_lens ? int_at(*gather_lens, r) : len;
    if (gather_lens)
      MLAKV_REQUIRE(n >= 0 && n <= len, "gather_lens[", r, "]: ", n, ", expected in [0, seq_lens[", r, "] = ", len,
                    "]");
    MLAKV_REQUIRE(offset + n <= max_rows, gather_lens ? "gather_lens[" : "seq_lens[", r, "]: offset ", offset, " + ",
                  n, " rows = ", offset + n, ", expected <= max_rows = ", max_rows, " (", out.describe(), ")");
    MLAKV_REQUIRE(len <= table_capacity(block_table.size(1), cache.desc.block_size), "seq_lens[", r, "]: ", len,
                  ", beyond the block_table capacity of ", block_table.size(1), " blocks x ", cache.desc.block_size,
                  " tokens");
    check_positions(cache, block_table, r, len - n, n, "gathered range");
  }
  return dev;
}

}  // namespace mlakv::detail
