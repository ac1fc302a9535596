// CPU implementations of the DCP kernels (src/dcp/dcp_ops.hpp). Merges run in double.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu/attention_math.hpp"
#include "cpu/cache_codec.hpp"
#include "dcp/dcp_ops.hpp"

namespace mlakv::dcp::ops {
namespace {

using cpu::element_ptr;
using cpu::kNegInf;
using cpu::lse_or_empty;

constexpr int K = kHeadDim;
constexpr int D = kLatentDim;

int32_t i32_at(const Tensor& t, int64_t i) { return static_cast<const int32_t*>(t.data)[i * t.stride[0]]; }

// Merge weights exp(lse_s - LSE) of `n` partials (read with stride `step`) and their LSE.
double merge_weights(const float* lse, int n, std::size_t step, double* w) {
  double m = kNegInf;
  for (int s = 0; s < n; ++s) m = std::max(m, lse_or_empty(lse[s * step]));
  if (m == kNegInf) {
    for (int s = 0; s < n; ++s) w[s] = 0;
    return kNegInf;
  }
  double sum = 0;
  for (int s = 0; s < n; ++s) sum += (w[s] = std::exp(lse_or_empty(lse[s * step]) - m));
  for (int s = 0; s < n; ++s) w[s] /= sum;
  return m + std::log(sum);
}

// Row t of [B, s_q, ...] tensors: t = b · s_q + i.
uint8_t* out_row(const Tensor& t, int64_t row, int64_t head) {
  const int64_t s_q = t.shape[1];
  return element_ptr(t, {row / s_q, row % s_q, head});
}

void store_row(const Tensor& out, int64_t t, int64_t n, const double* v) {
  uint8_t* p = out_row(out, t, n);
  const std::size_t e = dtype_size(out.dtype);
  for (int i = 0; i < D; ++i) cpu::store_value(p + i * e, out.dtype, v[i]);
}

void slot_mapping(const Tensor& positions, const Tensor& token_to_req, const Tensor& block_table, int block_size,
                  DcpShard shard, const Tensor& slots, Stream) {
  for (int64_t t = 0; t < positions.shape[0]; ++t) {
    const int64_t pos = static_cast<const int64_t*>(positions.data)[t * positions.stride[0]];
    const int64_t req = i32_at(token_to_req, t);
    int64_t slot = -1;
    if (pos >= 0 && req >= 0 && owner(pos, shard.world, shard.interleave) == shard.rank) {
      const int64_t j = local_index(pos, shard.world, shard.interleave);
      const int64_t block = static_cast<const int32_t*>(block_table.data)[req * block_table.stride[0] + j / block_size];
      slot = block * block_size + j % block_size;
    }
    static_cast<int64_t*>(slots.data)[t * slots.stride[0]] = slot;
  }
}

void pack_q(const Tensor& q, void* dst, bool to_e4m3, const float* q_scale, Stream) {
  const int64_t B = q.shape[0], S = q.shape[1], N = q.shape[2];
  auto* out = static_cast<uint8_t*>(dst);
  const std::size_t esz = to_e4m3 ? 1 : 2;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t s = 0; s < S; ++s)
      for (int64_t n = 0; n < N; ++n) {
        const auto* src = reinterpret_cast<const uint16_t*>(element_ptr(q, {b, s, n}));
        uint8_t* d = out + static_cast<std::size_t>(((b * S + s) * N + n) * K) * esz;
        if (!to_e4m3) {
          std::memcpy(d, src, K * 2);
          continue;
        }
        for (int i = 0; i < K; ++i) d[i] = num::f32_to_e4m3(num::bf16_to_f32(src[i]) / *q_scale);
      }
}

void arrange_q(const void* src, DType src_dtype, int world, int64_t tokens, int heads, void* dst, bool quantize,
               const float* q_scale, Stream) {
  const std::size_t in_e = dtype_size(src_dtype), out_e = quantize ? 1 : in_e;
  const auto* in = static_cast<const uint8_t*>(src);
  auto* out = static_cast<uint8_t*>(dst);
  for (int r = 0; r < world; ++r)
    for (int64_t t = 0; t < tokens; ++t)
      for (int n = 0; n < heads; ++n) {
        const uint8_t* s = in + static_cast<std::size_t>(((r * tokens + t) * heads + n) * K) * in_e;
        uint8_t* d = out + static_cast<std::size_t>((t * world * heads + static_cast<int64_t>(r) * heads + n) * K) * out_e;
        if (!quantize) {
          std::memcpy(d, s, K * in_e);
          continue;
        }
        for (int i = 0; i < K; ++i) {
          uint16_t b;
          std::memcpy(&b, s + 2 * i, 2);
          d[i] = num::f32_to_e4m3(num::bf16_to_f32(b) / *q_scale);
        }
      }
}

void rescale_partials(const float* o_partial, const float* lse_all, int world, int rank, int64_t tokens, int heads,
                      float* dst, Stream) {
  const auto WN = static_cast<std::size_t>(world) * heads;
  const std::size_t rank_stride = static_cast<std::size_t>(tokens) * WN;
  std::vector<double> w(static_cast<std::size_t>(world));
  for (int d = 0; d < world; ++d)
    for (int64_t t = 0; t < tokens; ++t)
      for (int n = 0; n < heads; ++n) {
        const std::size_t h = static_cast<std::size_t>(t) * WN + static_cast<std::size_t>(d) * heads + n;
        merge_weights(lse_all + h, world, rank_stride, w.data());
        const double wr = w[static_cast<std::size_t>(rank)];
        const float* o = o_partial + h * D;
        float* out = dst + ((static_cast<std::size_t>(d) * tokens + t) * heads + n) * D;
        for (int i = 0; i < D; ++i) out[i] = wr == 0 ? 0.0f : static_cast<float>(wr * o[i]);
      }
}

void finish_reduce_scatter(const float* o_sum, const float* lse_all, int world, int rank, int64_t tokens, int heads,
                           const Tensor& out, const Tensor& lse, Stream) {
  const auto WN = static_cast<std::size_t>(world) * heads;
  std::vector<double> w(static_cast<std::size_t>(world)), row(D);
  for (int64_t t = 0; t < tokens; ++t)
    for (int n = 0; n < heads; ++n) {
      const std::size_t h = static_cast<std::size_t>(t) * WN + static_cast<std::size_t>(rank) * heads + n;
      const double total = merge_weights(lse_all + h, world, static_cast<std::size_t>(tokens) * WN, w.data());
      const float* o = o_sum + (static_cast<std::size_t>(t) * heads + n) * D;
      for (int i = 0; i < D; ++i) row[static_cast<std::size_t>(i)] = o[i];
      store_row(out, t, n, row.data());
      *reinterpret_cast<float*>(out_row(lse, t, n)) = static_cast<float>(total);
    }
}

void pack_partials(const float* o_partial, const float* lse_partial, int world, int64_t tokens, int heads, float* dst,
                   Stream) {
  const auto WN = static_cast<std::size_t>(world) * heads;
  const std::size_t TN = static_cast<std::size_t>(tokens) * heads;
  for (int d = 0; d < world; ++d) {
    float* block = dst + static_cast<std::size_t>(d) * packed_floats(tokens, heads);
    for (int64_t t = 0; t < tokens; ++t)
      for (int n = 0; n < heads; ++n) {
        const std::size_t src = static_cast<std::size_t>(t) * WN + static_cast<std::size_t>(d) * heads + n;
        const std::size_t tn = static_cast<std::size_t>(t) * heads + n;
        std::memcpy(block + tn * D, o_partial + src * D, D * sizeof(float));
        block[TN * D + tn] = lse_partial[src];
      }
  }
}

void merge_packed(const float* recv, int world, int64_t tokens, int heads, const Tensor& out, const Tensor& lse,
                  Stream) {
  const std::size_t block = packed_floats(tokens, heads), TN = static_cast<std::size_t>(tokens) * heads;
  std::vector<double> w(static_cast<std::size_t>(world)), row(D);
  for (int64_t t = 0; t < tokens; ++t)
    for (int n = 0; n < heads; ++n) {
      const std::size_t tn = static_cast<std::size_t>(t) * heads + n;
      const double total = merge_weights(recv + TN * D + tn, world, block, w.data());
      std::fill(row.begin(), row.end(), 0.0);
      for (int s = 0; s < world; ++s) {
        const double ws = w[static_cast<std::size_t>(s)];
        if (ws == 0) continue;  // an empty partial may hold anything
        const float* o = recv + static_cast<std::size_t>(s) * block + tn * D;
        for (int i = 0; i < D; ++i) row[static_cast<std::size_t>(i)] += ws * o[i];
      }
      store_row(out, t, n, row.data());
      *reinterpret_cast<float*>(out_row(lse, t, n)) = static_cast<float>(total);
    }
}

void context_offsets(const Tensor& cu_seq_lens, int world, int interleave, int32_t* offsets, Stream) {
  const int64_t batch = cu_seq_lens.shape[0] - 1;
  for (int r = 0; r < world; ++r) {
    int32_t* o = offsets + static_cast<std::size_t>(r) * (batch + 1);
    o[0] = 0;
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t len = i32_at(cu_seq_lens, b + 1) - i32_at(cu_seq_lens, b);
      o[b + 1] = o[b] + static_cast<int32_t>(local_length(len, r, world, interleave));
    }
  }
}

void pack_context(const Cache& cache, const Tensor& block_table, const Tensor& /*cu_seq_lens: in offsets*/,
                  const Tensor& seq_starts,
                  DcpShard shard, const int32_t* offsets, uint8_t* dst, int64_t capacity, Stream) {
  const CacheDesc& desc = cache.desc;
  const int64_t batch = seq_starts.shape[0], tb = desc.token_bytes();
  const int32_t* mine = offsets + static_cast<std::size_t>(shard.rank) * (batch + 1);
  const auto* base = static_cast<const uint8_t*>(cache.data);
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t first = i32_at(seq_starts, b) / shard.world;
    const auto* table = static_cast<const int32_t*>(block_table.data) + b * block_table.stride[0];
    for (int64_t i = 0; i < mine[b + 1] - mine[b] && mine[b] + i < capacity; ++i) {
      const int64_t j = first + i;
      const uint8_t* block = base + static_cast<int64_t>(table[j / desc.block_size]) * desc.stride_bytes();
      cpu::codec::copy_token_bytes(desc, block, j % desc.block_size, dst + (mine[b] + i) * tb);
    }
  }
}

void unpack_context(const uint8_t* recv, int64_t capacity, CacheFormat format, const float* scale,
                    const Tensor& cu_seq_lens, int world, int interleave, const int32_t* offsets, const Tensor& out,
                    Stream) {
  CacheDesc desc;
  desc.format = format;
  const int64_t batch = cu_seq_lens.shape[0] - 1, tb = desc.token_bytes();
  const int width = desc.row_width();
  const float s = format == CacheFormat::fp8 ? *scale : 1.0f;
  std::vector<float> row(static_cast<std::size_t>(width));
  const std::size_t e = dtype_size(out.dtype);
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t lo = i32_at(cu_seq_lens, b), len = i32_at(cu_seq_lens, b + 1) - lo;
    for (int64_t p = 0; p < len; ++p) {
      const int r = owner(p, world, interleave);
      const int64_t src_row = offsets[static_cast<std::size_t>(r) * (batch + 1) + b] + local_index(p, world, interleave);
      cpu::codec::decode_packed_token(format, recv + (r * capacity + src_row) * tb, s, row.data());
      uint8_t* d = cpu::element_ptr(out, {lo + p});
      for (int i = 0; i < width; ++i) cpu::store_value(d + i * e, out.dtype, row[static_cast<std::size_t>(i)]);
    }
  }
}

}  // namespace

const Kernels& cpu_kernels() {
  static const Kernels k{slot_mapping,  pack_q,       arrange_q,       rescale_partials, finish_reduce_scatter,
                         pack_partials, merge_packed, context_offsets, pack_context,     unpack_context};
  return k;
}

}  // namespace mlakv::dcp::ops
