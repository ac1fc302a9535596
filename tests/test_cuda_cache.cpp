// CUDA cache ops 1-5 against the CPU reference (the same public ops on host tensors), bit for
// bit: every format, block sizes 1/16/64, lengths 0/1/odd/large, shuffled physical blocks,
// negative slots, strided and misaligned views, poisoned outputs (rows outside the written range
// must stay poisoned), device-side block ids out of range, and the DeepSeek-V4 reference vectors.
// Skipped without a GPU; compiled wherever the CUDA backend is.
#include <cmath>
#include <cstring>
#include <optional>

#include "cache_test_util.hpp"

#include "cuda_test_util.hpp"

#if MLAKV_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace mlakv::test {
namespace {

#if MLAKV_WITH_CUDA

const Device kGpu = Device::cuda(0);

/// The same view over device memory at `base + (host view's offset into host_base)`.
Tensor on_gpu(const Tensor& h, const void* host_base, const DevBuf& d) {
  Tensor t = h;
  t.data = d.u8() + (static_cast<const uint8_t*>(h.data) - static_cast<const uint8_t*>(host_base));
  t.device = kGpu;
  return t;
}
Tensor on_gpu(const Tensor& h, const DevBuf& d) { return on_gpu(h, h.data, d); }

/// Index of the first differing byte, or -1.
int64_t first_diff(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  if (a.size() != b.size()) return 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i]) return static_cast<int64_t>(i);
  return -1;
}

template <class T> std::vector<uint8_t> bytes_of(const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  if (!b.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

/// Rows of random values in bf16 or f32, with a few all-zero rows (FLT_MIN / 1e-4 scale floors)
/// and per-64-group magnitudes from 2^-14 to 2^12 (every UE8M0 / tile-scale regime).
std::vector<uint8_t> random_rows(int64_t rows, int64_t stride, int width, DType dt) {
  const std::size_t es = dtype_size(dt);
  std::vector<uint8_t> v(static_cast<std::size_t>(rows * stride) * es, 0x77);
  std::uniform_int_distribution<int> mag(-14, 12);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int64_t r = 0; r < rows; ++r) {
    const bool zero = r % 13 == 5;
    for (int g = 0; g < width; g += 64) {
      const float m = std::ldexp(1.0f, mag(rng()));
      for (int i = g; i < g + 64 && i < width; ++i) {
        const float x = zero ? 0.0f : nd(rng()) * m;
        uint8_t* p = v.data() + static_cast<std::size_t>(r * stride + i) * es;
        if (dt == DType::f32) std::memcpy(p, &x, 4);
        else {
          const uint16_t b = num::f32_to_bf16(x);
          std::memcpy(p, &b, 2);
        }
      }
    }
  }
  return v;
}

/// `n` distinct slots of a cache of `capacity` tokens, every 7th one -1 (another rank's token).
std::vector<int64_t> random_slots(int64_t n, int64_t capacity) {
  std::vector<int64_t> all(static_cast<std::size_t>(capacity));
  std::iota(all.begin(), all.end(), 0);
  std::shuffle(all.begin(), all.end(), rng());
  std::vector<int64_t> s(all.begin(), all.begin() + n);
  for (int64_t i = 3; i < n; i += 7) s[static_cast<std::size_t>(i)] = -1;
  return s;
}

/// A host cache and its device copy, both starting from the same poisoned bytes.
struct TwinCache {
  HostCache host;
  DevBuf dev;
  DevBuf scale;
  Cache gpu;
  TwinCache(CacheFormat f, int64_t blocks, int bs, int64_t stride = 0, uint8_t fill = 0xAB, float fp8_scale = 0.03125f,
            std::size_t misalign = 0)
      : host(f, blocks, bs, stride, fill, fp8_scale), dev(host.bytes.size() + 16), scale(std::vector<float>{fp8_scale}) {
    gpu = host.cache;
    gpu.data = dev.u8() + misalign;
    gpu.device = kGpu;
    gpu.scale = static_cast<const float*>(scale.p);
    upload();
  }
  void upload() {
    EXPECT_EQ(cudaMemcpy(gpu.data, host.bytes.data(), host.bytes.size(), cudaMemcpyHostToDevice), cudaSuccess);
  }
  std::vector<uint8_t> download() const {
    std::vector<uint8_t> v(host.bytes.size());
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(v.data(), gpu.data, v.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    return v;
  }
  void expect_same(const std::string& what) const {
    const int64_t d = first_diff(download(), host.bytes);
    const int64_t stride = host.cache.desc.stride_bytes();
    EXPECT_EQ(d, -1) << what << ": first difference in block " << d / stride << " at byte " << d % stride;
  }
};

// ---------------------------------------------------------------------------------------------
// Op 1: write_cache.

struct WriteCase {
  CacheFormat format;
  DType dt;
  int bs;
  int64_t tokens;
  int64_t pad = 0;       // extra elements per input row
  bool misaligned = false;
};

void run_write_case(const WriteCase& c) {
  const std::string what = std::string(format_name(c.format)) + " " + dtype_name(c.dt) + " bs=" + std::to_string(c.bs) +
                           " T=" + std::to_string(c.tokens) + " pad=" + std::to_string(c.pad) +
                           (c.misaligned ? " misaligned" : "");
  const int64_t blocks = (c.tokens + c.bs - 1) / c.bs + 3;
  TwinCache tc(c.format, blocks, c.bs, 0, 0xAB, 0.03125f, c.misaligned ? 4 : 0);
  auto slots = random_slots(c.tokens, blocks * c.bs);
  const int64_t rows = c.tokens + 2;  // graph padding rows: never read
  const int64_t kv_stride = kLatentDim + c.pad, pe_stride = kRopeDim + c.pad;
  auto kv = random_rows(rows, kv_stride, kLatentDim, c.dt);
  auto pe = random_rows(rows, pe_stride, kRopeDim, c.dt);
  Tensor kv_h(kv.data(), c.dt, {rows, kLatentDim}, {kv_stride, 1});
  Tensor pe_h(pe.data(), c.dt, {rows, kRopeDim}, {pe_stride, 1});
  Tensor sl_h = vec_i64(slots);
  write_cache(kv_h, pe_h, sl_h, tc.host.cache);

  const std::size_t shift = c.misaligned ? 2 : 0;  // bf16/f32 element-aligned, not 16-byte aligned
  DevBuf kv_d(kv.size() + 16), pe_d(pe.size() + 16), sl_d(slots);
  ASSERT_EQ(cudaMemcpy(kv_d.u8() + shift * dtype_size(c.dt), kv.data(), kv.size(), cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(pe_d.u8() + shift * dtype_size(c.dt), pe.data(), pe.size(), cudaMemcpyHostToDevice), cudaSuccess);
  Tensor kv_g = kv_h, pe_g = pe_h;
  kv_g.data = kv_d.u8() + shift * dtype_size(c.dt);
  pe_g.data = pe_d.u8() + shift * dtype_size(c.dt);
  kv_g.device = pe_g.device = kGpu;
  write_cache(kv_g, pe_g, on_gpu(sl_h, sl_d), tc.gpu);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess) << what;
  tc.expect_same(what);
}

TEST(CudaCache, WriteCacheMatchesCpuBitForBit) {
  MLAKV_REQUIRE_GPU();
  for (CacheFormat f : {CacheFormat::bf16, CacheFormat::fp8, CacheFormat::fp8_ds_mla})
    for (DType dt : {DType::bf16, DType::f32})
      for (int bs : {1, 16, 64})
        for (int64_t t : {int64_t{0}, int64_t{1}, int64_t{37}, int64_t{1001}}) run_write_case({f, dt, bs, t});
}

TEST(CudaCache, WriteCacheStridedAndMisalignedInputs) {
  MLAKV_REQUIRE_GPU();
  for (CacheFormat f : {CacheFormat::bf16, CacheFormat::fp8, CacheFormat::fp8_ds_mla})
    for (DType dt : {DType::bf16, DType::f32}) {
      run_write_case({f, dt, 64, 300, 8});         // padded rows, still 16-byte aligned
      run_write_case({f, dt, 16, 300, 3});         // padded rows, misaligned strides
      run_write_case({f, dt, 16, 129, 0, true});   // misaligned base pointers
    }
}

/// Lays `vals` out as rows of 576 (512 latent into kv, 64 rope into pe), cycling to fill the
/// last row; returns the row count.
template <class T> int64_t spread_over_rows(const std::vector<T>& vals, std::vector<T>& kv, std::vector<T>& pe) {
  const int64_t rows = (static_cast<int64_t>(vals.size()) + kHeadDim - 1) / kHeadDim;
  kv.assign(static_cast<std::size_t>(rows * kLatentDim), T{});
  pe.assign(static_cast<std::size_t>(rows * kRopeDim), T{});
  for (int64_t r = 0; r < rows; ++r)
    for (int i = 0; i < kHeadDim; ++i) {
      const T v = vals[static_cast<std::size_t>(r * kHeadDim + i) % vals.size()];
      if (i < kLatentDim) kv[static_cast<std::size_t>(r * kLatentDim + i)] = v;
      else pe[static_cast<std::size_t>(r * kRopeDim + i - kLatentDim)] = v;
    }
  return rows;
}

// Every non-NaN bf16 value (infinities included), quantized with per-tensor scales from subnormal
// to 5e30 and with fp8_ds_mla's own tile scales: every quotient x / s, and so every e4m3 code,
// must round as on the host.
TEST(CudaCache, WriteCacheQuantizesEveryBf16ValueLikeTheHost) {
  MLAKV_REQUIRE_GPU();
  std::vector<uint16_t> all;
  for (uint32_t b = 0; b < 65536; ++b)
    if ((b & 0x7f80u) != 0x7f80u || (b & 0x7fu) == 0) all.push_back(static_cast<uint16_t>(b));
  for (int pass = 0; pass < 2; ++pass) {
    if (pass == 1) std::shuffle(all.begin(), all.end(), rng());  // mixed magnitudes within a tile
    std::vector<uint16_t> kv, pe;
    const int64_t rows = spread_over_rows(all, kv, pe);
    std::vector<int64_t> slots(static_cast<std::size_t>(rows));
    std::iota(slots.begin(), slots.end(), 0);
    // fp8_ds_mla: no infinities (an infinite tile scale makes inf / inf, whose NaN sign differs
    // between the host's x86 division and the GPU's canonical NaN; NaN payloads are not contract).
    std::vector<uint16_t> kv_fin = kv, pe_fin = pe;
    for (auto* v : {&kv_fin, &pe_fin})
      for (auto& x : *v)
        if ((x & 0x7fffu) == 0x7f80u) x = static_cast<uint16_t>(x - 1);
    DevBuf kv_d(kv), pe_d(pe), kvf_d(kv_fin), pef_d(pe_fin), sl_d(slots);
    Tensor sl_h = vec_i64(slots);
    const std::vector<std::pair<CacheFormat, float>> cases = {
        {CacheFormat::fp8_ds_mla, 1.0f}, {CacheFormat::fp8, 0.0625f},    {CacheFormat::fp8, 1.0f / 3.0f},
        {CacheFormat::fp8, 0.0071f},     {CacheFormat::fp8, 3e-30f},     {CacheFormat::fp8, 0x1.3p-95f},
        {CacheFormat::fp8, 0x1.7p-89f},  {CacheFormat::fp8, 7e29f},      {CacheFormat::fp8, 5e30f},
        {CacheFormat::fp8, 1.1754944e-38f}, {CacheFormat::fp8, 1e-40f}};
    for (const auto& [f, scale] : cases) {
      const bool fin = f == CacheFormat::fp8_ds_mla;
      Tensor kv_h((fin ? kv_fin : kv).data(), DType::bf16, {rows, kLatentDim});
      Tensor pe_h((fin ? pe_fin : pe).data(), DType::bf16, {rows, kRopeDim});
      TwinCache tc(f, (rows + 63) / 64, 64, 0, 0xAB, scale);
      write_cache(kv_h, pe_h, sl_h, tc.host.cache);
      write_cache(on_gpu(kv_h, fin ? kvf_d : kv_d), on_gpu(pe_h, fin ? pef_d : pe_d), on_gpu(sl_h, sl_d), tc.gpu);
      tc.expect_same(std::string(format_name(f)) + " scale " + std::to_string(scale) + " pass " + std::to_string(pass));
    }
  }
}

// f32 inputs within a few ulps of q·s for every e4m3 rounding midpoint q (and of ±464, where
// saturation starts), for divisors that are not powers of two: the quotients the GPU's fast
// division could round differently from the host's x / s, if it were not exact.
TEST(CudaCache, WriteCacheFp8RoundsQuotientsAtE4m3MidpointsLikeTheHost) {
  MLAKV_REQUIRE_GPU();
  std::vector<double> mids;
  for (int c = 0; c < 126; ++c) mids.push_back(0.5 * (double{num::e4m3_to_f32(static_cast<uint8_t>(c))} +
                                                      double{num::e4m3_to_f32(static_cast<uint8_t>(c + 1))}));
  mids.push_back(464.0);
  for (float scale : {1.0f / 3.0f, 0.37f, 0.0071f, 13.7f, 0x1.fffffep-3f, 0x1.000002p+5f}) {
    std::vector<float> vals;
    for (double m : mids)
      for (double sign : {1.0, -1.0}) {
        float x = static_cast<float>(sign * m * double{scale});
        for (int i = 0; i < 3; ++i) x = std::nextafter(x, 0.0f);
        for (int i = 0; i < 7; ++i, x = std::nextafter(x, static_cast<float>(sign) * INFINITY)) vals.push_back(x);
      }
    std::vector<float> kv, pe;
    const int64_t rows = spread_over_rows(vals, kv, pe);
    std::vector<int64_t> slots(static_cast<std::size_t>(rows));
    std::iota(slots.begin(), slots.end(), 0);
    DevBuf kv_d(kv), pe_d(pe), sl_d(slots);
    Tensor kv_h(kv.data(), DType::f32, {rows, kLatentDim}), pe_h(pe.data(), DType::f32, {rows, kRopeDim});
    Tensor sl_h = vec_i64(slots);
    TwinCache tc(CacheFormat::fp8, (rows + 15) / 16, 16, 0, 0xAB, scale);
    write_cache(kv_h, pe_h, sl_h, tc.host.cache);
    write_cache(on_gpu(kv_h, kv_d), on_gpu(pe_h, pe_d), on_gpu(sl_h, sl_d), tc.gpu);
    tc.expect_same("fp8 scale " + std::to_string(scale));
  }
}

TEST(CudaCache, WriteCacheLargeBatch) {
  MLAKV_REQUIRE_GPU();
  run_write_case({CacheFormat::fp8_ds_mla, DType::bf16, 64, 40000});
  run_write_case({CacheFormat::fp8, DType::bf16, 64, 40000});
}

// ---------------------------------------------------------------------------------------------
// Op 4: dsv4_write.

void run_dsv4_write_case(int bs, int64_t tokens, int64_t stride, int64_t pad = 0, bool misaligned = false) {
  const std::string what = "dsv4_write bs=" + std::to_string(bs) + " T=" + std::to_string(tokens) + " stride=" +
                           std::to_string(stride) + " pad=" + std::to_string(pad) + (misaligned ? " misaligned" : "");
  const int64_t blocks = (tokens + bs - 1) / bs + 2;
  TwinCache tc(CacheFormat::dsv4, blocks, bs, stride, 0xAB, 1.0f, misaligned ? 2 : 0);
  auto slots = random_slots(tokens, blocks * bs);
  const int64_t rows = tokens + 1, ks = kDsv4HeadDim + pad;
  auto k = random_rows(rows, ks, kDsv4HeadDim, DType::bf16);
  Tensor k_h(k.data(), DType::bf16, {rows, kDsv4HeadDim}, {ks, 1});
  Tensor sl_h = vec_i64(slots);
  dsv4_write(k_h, sl_h, tc.host.cache);
  DevBuf k_d(k), sl_d(slots);
  dsv4_write(on_gpu(k_h, k_d), on_gpu(sl_h, sl_d), tc.gpu);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess) << what;
  tc.expect_same(what);
}

TEST(CudaCache, Dsv4WriteMatchesCpuBitForBit) {
  MLAKV_REQUIRE_GPU();
  for (int bs : {1, 16, 64})
    for (int64_t t : {int64_t{0}, int64_t{1}, int64_t{37}, int64_t{1001}}) {
      run_dsv4_write_case(bs, t, 0);
      run_dsv4_write_case(bs, t, static_cast<int64_t>(bs) * 584 + 40);  // padded block stride (8-aligned)
    }
  run_dsv4_write_case(64, 500, 0, 8);
  run_dsv4_write_case(16, 200, 0, 3);
  run_dsv4_write_case(64, 200, 0, 0, true);
  run_dsv4_write_case(64, 20000, 0);
}

// ---------------------------------------------------------------------------------------------
// Ops 2 and 3: gather_cache and gather_dequant_cache.

/// Requests, their block tables and a cache holding valid tokens in every slot.
struct GatherProblem {
  CacheFormat format;
  int bs;
  std::vector<int32_t> lens, starts, cu, token_to_seq;
  std::vector<int32_t> table;
  int64_t max_blocks = 0, rows = 0, extra_rows = 3;
  std::unique_ptr<TwinCache> cache;

  GatherProblem(CacheFormat f, int block_size, std::vector<int32_t> l, bool with_starts, int64_t stride = 0)
      : format(f), bs(block_size), lens(std::move(l)) {
    const int64_t B = static_cast<int64_t>(lens.size());
    std::uniform_int_distribution<int> sd(0, 3 * bs + 5);
    starts.assign(lens.size(), 0);
    cu.assign(lens.size() + 1, 0);
    int64_t used = 0;
    for (int64_t b = 0; b < B; ++b) {
      if (with_starts) starts[b] = sd(rng());
      cu[b + 1] = cu[b] + lens[b];
      max_blocks = std::max<int64_t>(max_blocks, (starts[b] + lens[b] + bs - 1) / bs);
    }
    max_blocks = std::max<int64_t>(max_blocks, 1);
    used = B * max_blocks;
    const int64_t blocks = used + 2;
    auto pool = shuffled_blocks(blocks);
    table.assign(pool.begin(), pool.begin() + used);
    rows = cu[B];
    for (int64_t b = 0; b < B; ++b)
      for (int32_t i = 0; i < lens[b]; ++i) token_to_seq.push_back(static_cast<int32_t>(b));
    token_to_seq.resize(static_cast<std::size_t>(rows + extra_rows), 0);
    cache = std::make_unique<TwinCache>(f, blocks, bs, stride, 0xAB, 0.0625f);
    fill_cache();
  }

  // Valid tokens everywhere (random bytes would include e4m3 NaN codes, whose payloads are
  // not part of the contract).
  void fill_cache() {
    const CacheDesc& d = cache->host.cache.desc;
    const int64_t cap = d.capacity_tokens();
    std::vector<int64_t> slots(static_cast<std::size_t>(cap));
    std::iota(slots.begin(), slots.end(), 0);
    if (format == CacheFormat::dsv4) {
      auto k = random_rows(cap, kDsv4HeadDim, kDsv4HeadDim, DType::bf16);
      dsv4_write(Tensor(k.data(), DType::bf16, {cap, kDsv4HeadDim}), vec_i64(slots), cache->host.cache);
    } else {
      auto kv = random_rows(cap, kLatentDim, kLatentDim, DType::bf16);
      auto pe = random_rows(cap, kRopeDim, kRopeDim, DType::bf16);
      write_cache(Tensor(kv.data(), DType::bf16, {cap, kLatentDim}), Tensor(pe.data(), DType::bf16, {cap, kRopeDim}),
                  vec_i64(slots), cache->host.cache);
    }
    cache->upload();
  }
  Tensor bt() { return Tensor(table.data(), DType::i32, {static_cast<int64_t>(lens.size()), max_blocks}); }
};

enum class GatherKind { raw, bf16, f32 };

void run_gather_case(CacheFormat f, int bs, const std::vector<int32_t>& lens, GatherKind kind, bool starts, bool t2s,
                     int64_t row_pad = 0, std::size_t dst_shift = 0) {
  GatherProblem p(f, bs, lens, starts);
  const CacheDesc& d = p.cache->host.cache.desc;
  std::string what = std::string(format_name(f)) + " bs=" + std::to_string(bs) + " B=" + std::to_string(lens.size()) +
                     " rows=" + std::to_string(p.rows) + (kind == GatherKind::raw ? " raw" : kind == GatherKind::bf16 ? " ->bf16" : " ->f32") +
                     (starts ? " seq_starts" : "") + (t2s ? " token_to_seq" : "") + " pad=" + std::to_string(row_pad) +
                     " shift=" + std::to_string(dst_shift);
  const DType dt = kind == GatherKind::raw ? DType::u8 : kind == GatherKind::bf16 ? DType::bf16 : DType::f32;
  const int64_t width = kind == GatherKind::raw ? d.token_bytes() : d.row_width();
  const int64_t stride = width + row_pad;
  const int64_t rows = p.rows + p.extra_rows;  // rows past cu[B] must stay poisoned
  std::vector<uint8_t> dst(static_cast<std::size_t>(rows * stride) * dtype_size(dt) + 16, 0xCD);
  Tensor dst_h(dst.data() + dst_shift, dt, {rows, width}, {stride, 1});
  Tensor cu_h = vec_i32(p.cu), st_h = vec_i32(p.starts), ts_h = vec_i32(p.token_to_seq);
  GatherOptions oh;
  if (starts) oh.seq_starts = st_h;
  if (t2s) oh.token_to_seq = ts_h;
  if (kind == GatherKind::raw) gather_cache(p.cache->host.cache, p.bt(), cu_h, dst_h, oh);
  else gather_dequant_cache(p.cache->host.cache, p.bt(), cu_h, dst_h, oh);

  DevBuf dst_d(std::vector<uint8_t>(dst.size(), 0xCD)), cu_d(p.cu), st_d(p.starts), ts_d(p.token_to_seq), bt_d(p.table);
  GatherOptions og;
  if (starts) og.seq_starts = on_gpu(st_h, st_d);
  if (t2s) og.token_to_seq = on_gpu(ts_h, ts_d);
  Tensor dst_g = on_gpu(dst_h, dst.data(), dst_d);
  if (kind == GatherKind::raw) gather_cache(p.cache->gpu, on_gpu(p.bt(), bt_d), on_gpu(cu_h, cu_d), dst_g, og);
  else gather_dequant_cache(p.cache->gpu, on_gpu(p.bt(), bt_d), on_gpu(cu_h, cu_d), dst_g, og);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess) << what;
  const int64_t diff = first_diff(dst_d.get<uint8_t>(), dst);
  const int64_t row_bytes = stride * static_cast<int64_t>(dtype_size(dt));
  EXPECT_EQ(diff, -1) << what << ": first difference in row " << (diff - static_cast<int64_t>(dst_shift)) / row_bytes
                      << " byte " << (diff - static_cast<int64_t>(dst_shift)) % row_bytes;
  p.cache->expect_same(what + " (cache unchanged)");
}

const std::vector<std::vector<int32_t>> kGatherLens = {
    {0}, {1}, {37}, {5, 0, 1, 64, 65, 130}, {2000}, {0, 0, 0}, {3, 1, 0, 9, 17, 33, 1, 1, 200, 64, 63, 2}};

TEST(CudaCache, GatherRawMatchesCpu) {
  MLAKV_REQUIRE_GPU();
  for (CacheFormat f : {CacheFormat::bf16, CacheFormat::fp8, CacheFormat::fp8_ds_mla, CacheFormat::dsv4})
    for (int bs : {1, 16, 64})
      for (const auto& lens : kGatherLens) run_gather_case(f, bs, lens, GatherKind::raw, bs == 16, bs == 64);
}

TEST(CudaCache, GatherDequantMatchesCpu) {
  MLAKV_REQUIRE_GPU();
  for (CacheFormat f : {CacheFormat::bf16, CacheFormat::fp8, CacheFormat::fp8_ds_mla, CacheFormat::dsv4})
    for (GatherKind k : {GatherKind::bf16, GatherKind::f32})
      for (int bs : {1, 16, 64})
        for (const auto& lens : kGatherLens) {
          run_gather_case(f, bs, lens, k, false, false);
          if (lens.size() > 1) run_gather_case(f, bs, lens, k, true, bs != 16);
        }
}

TEST(CudaCache, GatherStridedAndMisalignedDestinations) {
  MLAKV_REQUIRE_GPU();
  const std::vector<int32_t> lens = {3, 70, 0, 129};
  for (CacheFormat f : {CacheFormat::bf16, CacheFormat::fp8, CacheFormat::fp8_ds_mla, CacheFormat::dsv4}) {
    run_gather_case(f, 16, lens, GatherKind::raw, true, false, 16);
    run_gather_case(f, 16, lens, GatherKind::raw, true, false, 3);
    run_gather_case(f, 16, lens, GatherKind::raw, false, false, 0, 4);
    run_gather_case(f, 16, lens, GatherKind::bf16, true, false, 24);
    run_gather_case(f, 16, lens, GatherKind::bf16, true, false, 1);
    run_gather_case(f, 16, lens, GatherKind::f32, false, true, 0, 4);
  }
}

TEST(CudaCache, GatherDequantLargeBatch) {
  MLAKV_REQUIRE_GPU();
  std::vector<int32_t> lens(40);
  std::uniform_int_distribution<int> ld(0, 3000);
  for (auto& l : lens) l = ld(rng());
  for (CacheFormat f : {CacheFormat::fp8, CacheFormat::fp8_ds_mla, CacheFormat::dsv4})
    run_gather_case(f, 64, lens, GatherKind::bf16, true, false);
}

// Device-side block ids the host never saw: rows whose block id is out of range are skipped.
TEST(CudaCache, GatherSkipsRowsWithOutOfRangeBlockIds) {
  MLAKV_REQUIRE_GPU();
  for (CacheFormat f : {CacheFormat::fp8, CacheFormat::dsv4}) {
    GatherProblem p(f, 16, {40, 50}, false);
    const int64_t blocks = p.cache->host.cache.desc.num_blocks;
    // Reference from the valid table, then the rows of the bad blocks put back to poison.
    const int64_t width = p.cache->host.cache.desc.row_width();
    std::vector<uint16_t> ref(static_cast<std::size_t>(p.rows * width), 0xCDCD);
    Tensor cu_h = vec_i32(p.cu);
    gather_dequant_cache(p.cache->host.cache, p.bt(), cu_h, Tensor(ref.data(), DType::bf16, {p.rows, width}));
    std::vector<int32_t> bad = p.table;
    bad[1] = static_cast<int32_t>(blocks);      // request 0, positions 16..31
    bad[p.max_blocks + 2] = -7;                 // request 1, positions 32..47
    bad[p.max_blocks + 0] = 1000000;            // request 1, positions 0..15
    for (int64_t pos = 16; pos < 32; ++pos) std::fill_n(ref.begin() + pos * width, width, 0xCDCD);
    for (int64_t pos = 0; pos < 48; ++pos)
      if (pos < 16 || pos >= 32) std::fill_n(ref.begin() + (40 + pos) * width, width, 0xCDCD);
    DevBuf dst_d(std::vector<uint16_t>(ref.size(), 0xCDCD)), cu_d(p.cu), bt_d(bad);
    gather_dequant_cache(p.cache->gpu, on_gpu(p.bt(), bt_d), on_gpu(cu_h, cu_d),
                         Tensor(dst_d.p, DType::bf16, {p.rows, width}, kGpu));
    EXPECT_EQ(dst_d.get<uint16_t>(), ref) << format_name(f);
  }
}

// ---------------------------------------------------------------------------------------------
// Op 5: dsv4_dequant_gather.

void run_dsv4_gather_case(int bs, const std::vector<int32_t>& seq_lens, bool with_gl, int64_t offset, int64_t stride,
                          int64_t row_pad = 0, int64_t extra_rows = 2) {
  GatherProblem p(CacheFormat::dsv4, bs, seq_lens, false, stride);
  const int64_t R = static_cast<int64_t>(seq_lens.size());
  std::vector<int32_t> gl(seq_lens.size());
  int64_t max_n = 0;
  for (std::size_t r = 0; r < seq_lens.size(); ++r) {
    gl[r] = with_gl ? static_cast<int32_t>(seq_lens[r] * (r % 3) / 3 + (seq_lens[r] > 0 && r % 2 ? 1 : 0)) : seq_lens[r];
    gl[r] = std::min(gl[r], seq_lens[r]);
    max_n = std::max<int64_t>(max_n, gl[r]);
  }
  const int64_t max_rows = offset + max_n + extra_rows;
  const int64_t rs = kDsv4HeadDim + row_pad, qs = max_rows * rs + 8 * row_pad;
  const std::string what = "dsv4_dequant_gather bs=" + std::to_string(bs) + " R=" + std::to_string(R) +
                           " gather_lens=" + std::to_string(with_gl) + " offset=" + std::to_string(offset) +
                           " stride=" + std::to_string(stride) + " pad=" + std::to_string(row_pad);
  std::vector<uint16_t> out(static_cast<std::size_t>(std::max<int64_t>(R, 1) * qs), num::f32_to_bf16(-12345.0f));
  Tensor out_h(out.data(), DType::bf16, {R, max_rows, kDsv4HeadDim}, {qs, rs, 1});
  Tensor sl_h = vec_i32(p.lens), gl_h = vec_i32(gl);
  std::optional<Tensor> glo_h;
  if (with_gl) glo_h = gl_h;
  std::vector<uint16_t> poisoned = out;
  dsv4_dequant_gather(p.cache->host.cache, p.bt(), sl_h, out_h, glo_h, offset);

  DevBuf out_d(poisoned), sl_d(p.lens), gl_d(gl), bt_d(p.table);
  std::optional<Tensor> glo_g;
  if (with_gl) glo_g = on_gpu(gl_h, gl_d);
  dsv4_dequant_gather(p.cache->gpu, on_gpu(p.bt(), bt_d), on_gpu(sl_h, sl_d), on_gpu(out_h, out_d), glo_g, offset);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess) << what;
  const int64_t diff = first_diff(bytes_of(out_d.get<uint16_t>()), bytes_of(out));
  EXPECT_EQ(diff, -1) << what << ": first difference in request " << diff / 2 / qs << " row " << diff / 2 % qs / rs;
}

TEST(CudaCache, Dsv4DequantGatherMatchesCpu) {
  MLAKV_REQUIRE_GPU();
  for (int bs : {1, 16, 64})
    for (const auto& lens : kGatherLens)
      for (bool gl : {false, true}) {
        run_dsv4_gather_case(bs, lens, gl, 0, 0);
        run_dsv4_gather_case(bs, lens, gl, 5, static_cast<int64_t>(bs) * 584 + 48);
      }
  run_dsv4_gather_case(64, {100, 7, 300}, true, 3, 0, 8);   // padded rows, still aligned
  run_dsv4_gather_case(64, {100, 7, 300}, true, 3, 0, 1);   // misaligned rows
  run_dsv4_gather_case(16, {100, 7, 300}, false, 0, 16 * 584 + 8);  // 8-byte block stride
  run_dsv4_gather_case(64, {32000}, false, 0, 0, 0, 0);
}

TEST(CudaCache, Dsv4DequantGatherSkipsOutOfRangeBlockIds) {
  MLAKV_REQUIRE_GPU();
  GatherProblem p(CacheFormat::dsv4, 16, {64}, false);
  std::vector<uint16_t> ref(64 * 512, 0x1234);
  Tensor sl_h = vec_i32(p.lens);
  dsv4_dequant_gather(p.cache->host.cache, p.bt(), sl_h, Tensor(ref.data(), DType::bf16, {1, 64, 512}));
  std::vector<int32_t> bad = p.table;
  bad[2] = -1;
  bad[3] = static_cast<int32_t>(p.cache->host.cache.desc.num_blocks);
  std::fill(ref.begin() + 32 * 512, ref.end(), 0x1234);
  DevBuf out_d(std::vector<uint16_t>(ref.size(), 0x1234)), sl_d(p.lens), bt_d(bad);
  dsv4_dequant_gather(p.cache->gpu, on_gpu(p.bt(), bt_d), on_gpu(sl_h, sl_d), Tensor(out_d.p, DType::bf16, {1, 64, 512}, kGpu));
  EXPECT_EQ(out_d.get<uint16_t>(), ref);
}

// Slots past the capacity can only come from device memory: they are skipped.
TEST(CudaCache, WritersSkipDeviceSlotsPastTheCache) {
  MLAKV_REQUIRE_GPU();
  TwinCache tc(CacheFormat::fp8_ds_mla, 4, 16);
  auto slots = random_slots(20, 64);
  auto kv = random_rows(20, kLatentDim, kLatentDim, DType::bf16);
  auto pe = random_rows(20, kRopeDim, kRopeDim, DType::bf16);
  Tensor kv_h(kv.data(), DType::bf16, {20, kLatentDim}), pe_h(pe.data(), DType::bf16, {20, kRopeDim});
  Tensor sl_h = vec_i64(slots);
  write_cache(kv_h, pe_h, sl_h, tc.host.cache);
  std::vector<int64_t> bad = slots;
  bad.push_back(64);
  bad.push_back(int64_t{1} << 40);
  auto kv2 = random_rows(22, kLatentDim, kLatentDim, DType::bf16);
  std::memcpy(kv2.data(), kv.data(), kv.size());
  auto pe2 = random_rows(22, kRopeDim, kRopeDim, DType::bf16);
  std::memcpy(pe2.data(), pe.data(), pe.size());
  DevBuf kv_d(kv2), pe_d(pe2), sl_d(bad);
  write_cache(Tensor(kv_d.p, DType::bf16, {22, kLatentDim}, kGpu), Tensor(pe_d.p, DType::bf16, {22, kRopeDim}, kGpu),
              Tensor(sl_d.p, DType::i64, {22}, kGpu), tc.gpu);
  tc.expect_same("write_cache with slots past the cache");

  TwinCache t4(CacheFormat::dsv4, 4, 16);
  auto k = random_rows(22, kDsv4HeadDim, kDsv4HeadDim, DType::bf16);
  dsv4_write(Tensor(k.data(), DType::bf16, {20, kDsv4HeadDim}), sl_h, t4.host.cache);
  DevBuf k_d(k);
  dsv4_write(Tensor(k_d.p, DType::bf16, {22, kDsv4HeadDim}, kGpu), Tensor(sl_d.p, DType::i64, {22}, kGpu), t4.gpu);
  t4.expect_same("dsv4_write with slots past the cache");
}

// ---------------------------------------------------------------------------------------------
// DeepSeek-V4 reference vectors (vLLM's writer and gather), on the GPU.

TEST(CudaCache, Dsv4ReferenceVectors) {
  MLAKV_REQUIRE_GPU();
  auto k = read_raw<uint16_t>("vectors/dsv4/k.bf16");
  auto slots = read_raw<int64_t>("vectors/dsv4/slot_mapping.i64");
  auto cache_ref = read_raw<uint8_t>("vectors/dsv4/cache.u8");
  auto table = read_raw<int32_t>("vectors/dsv4/block_table.i32");
  auto seq_lens = read_raw<int32_t>("vectors/dsv4/seq_lens.i32");
  auto gather_lens = read_raw<int32_t>("vectors/dsv4/gather_lens.i32");
  auto out_ref = read_raw<uint16_t>("vectors/dsv4/out.bf16");
  constexpr int64_t kStride = 37440, kMaxRows = 73, kOffset = 5;
  const int64_t T = static_cast<int64_t>(slots.size()), blocks = static_cast<int64_t>(cache_ref.size()) / kStride;
  const int64_t R = static_cast<int64_t>(seq_lens.size()), cols = static_cast<int64_t>(table.size()) / R;

  DevBuf cache_d(std::vector<uint8_t>(cache_ref.size(), 0xAB)), k_d(k), sl_d(slots);
  Cache c;
  c.data = cache_d.p;
  c.desc = {CacheFormat::dsv4, blocks, 64, kStride};
  c.device = kGpu;
  dsv4_write(Tensor(k_d.p, DType::bf16, {T, 512}, kGpu), Tensor(sl_d.p, DType::i64, {T}, kGpu), c);
  const int64_t d = first_diff(cache_d.get<uint8_t>(), cache_ref);
  EXPECT_EQ(d, -1) << "cache differs from vLLM's in block " << d / kStride << " byte " << d % kStride;

  DevBuf ref_cache_d(cache_ref), bt_d(table), seq_d(seq_lens), gl_d(gather_lens);
  DevBuf out_d(std::vector<uint16_t>(out_ref.size(), num::f32_to_bf16(-12345.0f)));
  c.data = ref_cache_d.p;
  dsv4_dequant_gather(c, Tensor(bt_d.p, DType::i32, {R, cols}, kGpu), Tensor(seq_d.p, DType::i32, {R}, kGpu),
                      Tensor(out_d.p, DType::bf16, {R, kMaxRows, 512}, kGpu), Tensor(gl_d.p, DType::i32, {R}, kGpu),
                      kOffset);
  const auto out = out_d.get<uint16_t>();
  for (int64_t r = 0; r < R; ++r)
    for (int64_t row = 0; row < kMaxRows; ++row) {
      const auto o = static_cast<std::size_t>((r * kMaxRows + row) * 512);
      ASSERT_EQ(0, std::memcmp(out.data() + o, out_ref.data() + o, 1024)) << "request " << r << " row " << row;
    }
}

// Ops enqueue on the caller's stream and never synchronize: capturable in a CUDA graph.
TEST(CudaCache, OpsCaptureInACudaGraph) {
  MLAKV_REQUIRE_GPU();
  GatherProblem p(CacheFormat::fp8, 64, {100, 3}, true);
  const int64_t width = kHeadDim;
  std::vector<uint16_t> ref(static_cast<std::size_t>(p.rows * width), 0);
  Tensor cu_h = vec_i32(p.cu), st_h = vec_i32(p.starts);
  GatherOptions oh;
  oh.seq_starts = st_h;
  gather_dequant_cache(p.cache->host.cache, p.bt(), cu_h, Tensor(ref.data(), DType::bf16, {p.rows, width}), oh);

  DevBuf dst_d(ref.size() * 2), cu_d(p.cu), st_d(p.starts), bt_d(p.table);
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  GatherOptions og;
  og.seq_starts = on_gpu(st_h, st_d);
  cudaGraph_t g;
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  gather_dequant_cache(p.cache->gpu, on_gpu(p.bt(), bt_d), on_gpu(cu_h, cu_d),
                       Tensor(dst_d.p, DType::bf16, {p.rows, width}, kGpu), og, Stream{s});
  ASSERT_EQ(cudaStreamEndCapture(s, &g), cudaSuccess);
  cudaGraphExec_t ge;
  ASSERT_EQ(cudaGraphInstantiate(&ge, g, 0), cudaSuccess);
  ASSERT_EQ(cudaMemset(dst_d.p, 0xCD, dst_d.n), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(ge, s), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(dst_d.get<uint16_t>(), ref);
  cudaGraphExecDestroy(ge);
  cudaGraphDestroy(g);
  cudaStreamDestroy(s);
}

#else

TEST(CudaCache, SkippedWithoutCuda) { GTEST_SKIP() << "built without the CUDA backend"; }

#endif

}  // namespace
}  // namespace mlakv::test
