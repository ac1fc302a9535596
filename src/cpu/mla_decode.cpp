// CPU reference of mla_decode (SPEC §3.6): every product and sum in double, one rounding at the
// output. With a DCP shard the op attends over this rank's local tokens; global positions only
// matter for the causal limit.
#include <algorithm>
#include <cstring>
#include <vector>

#include "backend.hpp"
#include "cpu/attention_math.hpp"
#include "cpu/cache_codec.hpp"
#include "cpu/parallel.hpp"
#include "mlakv/dcp.hpp"

namespace mlakv::cpu {
namespace {

// The request's visible local rows, dequantized once and shared by all its queries and heads.
// Scales are applied in double to the exact e4m3 values (per-tensor for fp8, per tile for
// fp8_ds_mla), so the reference is the stored cache's exact meaning, not an f32-rounded copy.
void load_rows(const Cache& cache, const int32_t* table_row, int64_t rows, std::vector<double>& kv) {
  const CacheDesc& desc = cache.desc;
  const auto* base = static_cast<const uint8_t*>(cache.data);
  const double scale = desc.format == CacheFormat::fp8 ? static_cast<double>(*cache.scale) : 1.0;
  kv.resize(static_cast<std::size_t>(rows) * kHeadDim);
  float tmp[kHeadDim];
  for (int64_t j = 0; j < rows; ++j) {
    const uint8_t* block = base + static_cast<int64_t>(table_row[j / desc.block_size]) * desc.stride_bytes();
    const int64_t k = j % desc.block_size;
    double* dst = kv.data() + j * kHeadDim;
    codec::decode_token(desc, block, k, 1.0f, tmp);
    for (int i = 0; i < kHeadDim; ++i) dst[i] = static_cast<double>(tmp[i]) * scale;
    if (desc.format == CacheFormat::fp8_ds_mla) {
      const codec::detail::Parts p = codec::detail::in_block(desc, block, k);
      for (int i = 0; i < kLatentDim; ++i) {
        float tile_scale;
        std::memcpy(&tile_scale, p.scales + 4 * (i / kDsMlaTile), 4);
        dst[i] = static_cast<double>(num::e4m3_to_f32(p.data[i])) * tile_scale;
      }
    }
  }
}

void load_query(const Tensor& q, const float* q_scale, int64_t b, int64_t s, int64_t h, double* dst) {
  const uint8_t* p = element_ptr(q, {b, s, h});
  if (q.dtype == DType::e4m3) {
    const double qs = *q_scale;
    for (int i = 0; i < kHeadDim; ++i) dst[i] = static_cast<double>(num::e4m3_to_f32(p[i])) * qs;
  } else {
    for (int i = 0; i < kHeadDim; ++i) dst[i] = load_value(p + 2 * i, DType::bf16);
  }
}

}  // namespace

void mla_decode(const Tensor& q, const Cache& cache, const Tensor& block_table, const Tensor& seq_lens,
                const Tensor& out, const Tensor& lse, const DecodeParams& params, Workspace) {
  const int64_t batch = q.shape[0], s_q = q.shape[1], heads = q.shape[2];
  const DcpShard& sh = params.shard;
  const std::size_t eo = dtype_size(out.dtype);
  std::vector<double> kv;

  for (int64_t b = 0; b < batch; ++b) {
    const int64_t len = *reinterpret_cast<const int32_t*>(element_ptr(seq_lens, {b}));
    const auto* table_row = reinterpret_cast<const int32_t*>(element_ptr(block_table, {b}));
    // Local indices [0, local_length(limit)) are exactly this rank's tokens at global positions
    // below `limit`, because global_position is increasing in the local index.
    const int64_t local = dcp::local_length(len, sh.rank, sh.world, sh.interleave);
    load_rows(cache, table_row, local, kv);

    // Each (query, head) row reads the shared rows and writes only its own out and lse.
    parallel_for(s_q * heads, static_cast<double>(s_q * heads) * static_cast<double>(local) * (kHeadDim + kLatentDim),
                 [&](int64_t row) {
      const int64_t s = row / heads, h = row % heads;
      const int64_t limit = params.causal ? std::max<int64_t>(0, len - s_q + s + 1) : len;
      const int64_t visible = dcp::local_length(limit, sh.rank, sh.world, sh.interleave);
      std::vector<double> qrow(kHeadDim), scores(static_cast<std::size_t>(visible)), acc(kLatentDim, 0.0);
      load_query(q, params.q_scale, b, s, h, qrow.data());
      double m = kNegInf;
      for (int64_t j = 0; j < visible; ++j) {
        const double* k = kv.data() + j * kHeadDim;
        double dot = 0;
        for (int i = 0; i < kHeadDim; ++i) dot += qrow[static_cast<std::size_t>(i)] * k[i];
        scores[static_cast<std::size_t>(j)] = dot * params.softmax_scale;
        m = std::max(m, scores[static_cast<std::size_t>(j)]);
      }
      double sum = 0;
      for (int64_t j = 0; j < visible; ++j) {
        const double p = std::exp(scores[static_cast<std::size_t>(j)] - m);
        sum += p;
        const double* v = kv.data() + j * kHeadDim;
        for (int i = 0; i < kLatentDim; ++i) acc[static_cast<std::size_t>(i)] += p * v[i];
      }
      uint8_t* po = element_ptr(out, {b, s, h});
      for (int i = 0; i < kLatentDim; ++i)
        store_value(po + i * eo, out.dtype, visible > 0 ? acc[static_cast<std::size_t>(i)] / sum : 0.0);
      *reinterpret_cast<float*>(element_ptr(lse, {b, s, h})) =
          visible > 0 ? static_cast<float>(m + std::log(sum)) : -INFINITY;
    });
  }
}

}  // namespace mlakv::cpu
