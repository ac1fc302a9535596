// Helpers for the attention and DCP tests: owned host caches, random requests written through the
// public write ops, and a naive fp64 decode that reads the stored bytes on its own (it shares no
// code with the library's codec).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <numeric>
#include <vector>

#include "test_util.hpp"

namespace mlakv::test::attn {

/// A host cache that owns its bytes and scale (not movable: Cache points into it).
struct OwnedCache {
  std::vector<uint8_t> bytes;
  std::unique_ptr<float> scale;
  Cache cache;

  OwnedCache(CacheFormat format, int64_t num_blocks, int block_size, float fp8_scale = 0.02f, uint8_t fill = 0)
      : scale(std::make_unique<float>(fp8_scale)) {
    cache.desc = {format, num_blocks, block_size, 0};
    bytes.assign(static_cast<std::size_t>(cache.desc.total_bytes()), fill);
    cache.data = bytes.data();
    cache.scale = scale.get();
  }
  OwnedCache(const OwnedCache&) = delete;
  OwnedCache& operator=(const OwnedCache&) = delete;
};

/// Requests of the given lengths with N(0,1) bf16 latents: token t of request b is row
/// first[b] + t of kv_c / k_pe (and of k for dsv4).
struct Requests {
  std::vector<int32_t> lens;
  std::vector<int64_t> first;
  std::vector<uint16_t> kv_c, k_pe, k;  // [T,512], [T,64], [T,512]
  std::vector<int64_t> positions;
  std::vector<int32_t> token_to_req;
  int64_t tokens = 0;

  explicit Requests(std::vector<int32_t> lengths) : lens(std::move(lengths)) {
    for (std::size_t b = 0; b < lens.size(); ++b) {
      first.push_back(tokens);
      for (int32_t t = 0; t < lens[b]; ++t) {
        positions.push_back(t);
        token_to_req.push_back(static_cast<int32_t>(b));
      }
      tokens += lens[b];
    }
    kv_c = random_bf16(static_cast<std::size_t>(tokens) * kLatentDim);
    k_pe = random_bf16(static_cast<std::size_t>(tokens) * kRopeDim);
    k = random_bf16(static_cast<std::size_t>(tokens) * kDsv4HeadDim);
  }
  int batch() const { return static_cast<int>(lens.size()); }
};

/// A block table [B, max_blocks] giving request b `need[b]` distinct, shuffled blocks; unused
/// entries hold an invalid id, which no op may read.
struct BlockTable {
  std::vector<int32_t> ids;
  int64_t max_blocks = 0, num_blocks = 0;
  Tensor tensor;

  BlockTable(const std::vector<int64_t>& need, int64_t spare = 2) {
    for (int64_t n : need) max_blocks = std::max(max_blocks, n), num_blocks += n;
    max_blocks += 1;
    num_blocks += spare;
    std::vector<int32_t> pool(static_cast<std::size_t>(num_blocks));
    std::iota(pool.begin(), pool.end(), 0);
    std::shuffle(pool.begin(), pool.end(), rng());
    ids.assign(need.size() * static_cast<std::size_t>(max_blocks), 1000000);
    std::size_t next = 0;
    for (std::size_t b = 0; b < need.size(); ++b)
      for (int64_t j = 0; j < need[b]; ++j) ids[b * static_cast<std::size_t>(max_blocks) + j] = pool[next++];
    tensor = Tensor(ids.data(), DType::i32, {static_cast<int64_t>(need.size()), max_blocks});
  }
  int32_t at(int64_t b, int64_t j) const { return ids[static_cast<std::size_t>(b * max_blocks + j)]; }
};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/// Blocks request b needs on the fullest rank (rank 0 holds at least as many tokens as any other).
inline std::vector<int64_t> blocks_needed(const Requests& r, int block_size, int world, int interleave) {
  std::vector<int64_t> need;
  for (int32_t L : r.lens) need.push_back(ceil_div(dcp::local_length(L, 0, world, interleave), block_size));
  return need;
}

/// Writes every token whose slot_mapping entry is >= 0 through the public write op of the format.
inline void write_tokens(Requests& r, const Cache& cache, std::vector<int64_t>& slots) {
  Tensor sm(slots.data(), DType::i64, {r.tokens});
  if (cache.desc.format == CacheFormat::dsv4) {
    dsv4_write(Tensor(r.k.data(), DType::bf16, {r.tokens, kDsv4HeadDim}), sm, cache);
  } else {
    write_cache(Tensor(r.kv_c.data(), DType::bf16, {r.tokens, kLatentDim}),
                Tensor(r.k_pe.data(), DType::bf16, {r.tokens, kRopeDim}), sm, cache);
  }
}

/// Slots of rank `shard.rank` through dcp::slot_mapping.
inline std::vector<int64_t> dcp_slots(Requests& r, const BlockTable& bt, int block_size, const DcpShard& shard) {
  std::vector<int64_t> slots(static_cast<std::size_t>(r.tokens), -7);
  dcp::slot_mapping(Tensor(r.positions.data(), DType::i64, {r.tokens}),
                    Tensor(r.token_to_req.data(), DType::i32, {r.tokens}), bt.tensor, block_size, shard,
                    Tensor(slots.data(), DType::i64, {r.tokens}));
  return slots;
}

/// Single-rank slots computed directly from the block table.
inline std::vector<int64_t> plain_slots(const Requests& r, const BlockTable& bt, int block_size) {
  std::vector<int64_t> slots;
  for (int64_t t = 0; t < r.tokens; ++t) {
    const int64_t b = r.token_to_req[static_cast<std::size_t>(t)], p = r.positions[static_cast<std::size_t>(t)];
    slots.push_back(static_cast<int64_t>(bt.at(b, p / block_size)) * block_size + p % block_size);
  }
  return slots;
}

// ---- the independent fp64 reference ------------------------------------------------------------

inline double bf16_at(const uint8_t* p) {
  uint16_t b;
  std::memcpy(&b, p, 2);
  return num::bf16_to_f32(b);
}

/// The 576 values of the token in slot `slot`, read straight from the SPEC §2 layout.
inline std::vector<double> ref_token(const Cache& c, int64_t slot) {
  const CacheDesc& d = c.desc;
  const auto* blk = static_cast<const uint8_t*>(c.data) + (slot / d.block_size) * d.stride_bytes();
  const int64_t k = slot % d.block_size;
  std::vector<double> v(kHeadDim);
  switch (d.format) {
    case CacheFormat::bf16:
      for (int i = 0; i < kHeadDim; ++i) v[i] = bf16_at(blk + k * 1152 + 2 * i);
      break;
    case CacheFormat::fp8:
      for (int i = 0; i < kHeadDim; ++i) v[i] = static_cast<double>(num::e4m3_to_f32(blk[k * 576 + i])) * *c.scale;
      break;
    case CacheFormat::fp8_ds_mla: {
      const uint8_t* tok = blk + k * 656;
      for (int i = 0; i < kLatentDim; ++i) {
        float s;
        std::memcpy(&s, tok + 512 + 4 * (i / 128), 4);
        v[i] = static_cast<double>(num::e4m3_to_f32(tok[i])) * s;
      }
      for (int i = 0; i < kRopeDim; ++i) v[kLatentDim + i] = bf16_at(tok + 528 + 2 * i);
      break;
    }
    case CacheFormat::dsv4: break;
  }
  return v;
}

struct RefResult {
  std::vector<double> out;  // [B, s_q, H, 512]
  std::vector<double> lse;  // [B, s_q, H]
};

/// Query values [B, s_q, H, 576] as doubles: bf16 bits, or e4m3 codes times q_scale.
inline std::vector<double> query_values(const Tensor& q, float q_scale) {
  std::vector<double> v(static_cast<std::size_t>(q.numel()));
  for (std::size_t i = 0; i < v.size(); ++i)
    v[i] = q.dtype == DType::bf16 ? num::bf16_to_f32(q.ptr<uint16_t>()[i])
                                  : static_cast<double>(num::e4m3_to_f32(q.ptr<uint8_t>()[i])) * q_scale;
  return v;
}

/// Single-rank attention of contiguous q over positions [0, limit) of each request.
inline RefResult ref_decode(const Tensor& q, float q_scale, const Cache& cache, const Tensor& block_table,
                            const std::vector<int32_t>& lens, double softmax_scale, bool causal) {
  const int64_t B = q.shape[0], S = q.shape[1], H = q.shape[2];
  const std::vector<double> qv = query_values(q, q_scale);
  RefResult r;
  r.out.assign(static_cast<std::size_t>(B * S * H * kLatentDim), 0.0);
  r.lse.assign(static_cast<std::size_t>(B * S * H), -INFINITY);
  const auto* bt = block_table.ptr<int32_t>();
  const int bs = cache.desc.block_size;
  for (int64_t b = 0; b < B; ++b) {
    std::vector<std::vector<double>> kv;
    for (int64_t p = 0; p < lens[b]; ++p)
      kv.push_back(ref_token(cache, static_cast<int64_t>(bt[b * block_table.stride[0] + p / bs]) * bs + p % bs));
    for (int64_t s = 0; s < S; ++s) {
      const int64_t limit = causal ? std::max<int64_t>(0, lens[b] - S + s + 1) : lens[b];
      for (int64_t h = 0; h < H; ++h) {
        const double* qh = qv.data() + ((b * S + s) * H + h) * kHeadDim;
        std::vector<double> sc;
        double m = -INFINITY;
        for (int64_t p = 0; p < limit; ++p) {
          double dot = 0;
          for (int i = 0; i < kHeadDim; ++i) dot += qh[i] * kv[p][i];
          sc.push_back(dot * softmax_scale);
          m = std::max(m, sc.back());
        }
        if (limit == 0) continue;
        double sum = 0;
        double* o = r.out.data() + ((b * S + s) * H + h) * kLatentDim;
        for (int64_t p = 0; p < limit; ++p) {
          const double e = std::exp(sc[p] - m);
          sum += e;
          for (int i = 0; i < kLatentDim; ++i) o[i] += e * kv[p][i];
        }
        for (int i = 0; i < kLatentDim; ++i) o[i] /= sum;
        r.lse[(b * S + s) * H + h] = m + std::log(sum);
      }
    }
  }
  return r;
}

// ---- comparisons --------------------------------------------------------------------------------

/// Distance of a bf16 result from the exact value in units of the bf16 spacing at that value:
/// a correctly rounded result is within 0.5.
inline double bf16_spacing(double exact) {
  int e;
  std::frexp(exact, &e);             // |exact| in [2^(e-1), 2^e)
  return std::ldexp(1.0, e - 8);     // bf16 keeps 8 significant bits
}
inline double bf16_ulps(uint16_t got, double exact) {
  const double g = num::bf16_to_f32(got);
  if (exact == 0) return g == 0 ? 0 : INFINITY;
  return std::fabs(g - exact) / bf16_spacing(exact);
}

/// Largest |a - b| with both -inf counting as equal (and -inf vs finite as infinitely far).
template <class A, class B> double max_lse_diff(const A& a, const B& b) {
  double worst = 0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    const double x = a[i], y = b[i];
    if (std::isinf(x) && std::isinf(y) && (x < 0) == (y < 0)) continue;
    if (std::isnan(x) || std::isnan(y)) return INFINITY;
    worst = std::max(worst, std::fabs(x - y));
  }
  return worst;
}

}  // namespace mlakv::test::attn
