// `mlakv bench cache`: every cache op and format against the device-to-device copy ceiling
// measured in the same run. Block size 64, shuffled physical blocks, random data.
//
// Bytes are the fewest each op must move: cache bytes read (data + scales) plus output bytes
// written; writers count their input read plus the cache written. Shapes whose data would fit
// in L2 get several copies of every buffer, used in turn, so that no timed call finds its
// inputs in L2.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <iostream>
#include <memory>
#include <numeric>
#include <random>

#include "bench_util.hpp"
#include "mlakv/mlakv.hpp"
#if MLAKV_WITH_CUDA
#include "bench_cuda.hpp"
#endif

namespace mlakv::bench {

#if MLAKV_WITH_CUDA

namespace {

constexpr int kBlockSize = 64;
constexpr float kFp8Scale = 0.0625f;

struct Shape {
  int64_t requests, len;
};

int64_t token_bytes(CacheFormat f) { return CacheDesc{f, 1, kBlockSize, 0}.token_bytes(); }

/// One complete copy of a shape's inputs and outputs.
struct Set {
  int64_t R, L, N, blocks_per_req, num_blocks;
  DeviceBuffer bt, seq_lens, cu, slots, kv_c, k_pe, k, scale, dst;
  DeviceBuffer cache[4];
  Cache c[4];

  Set(const Shape& s, const DeviceBuffer& pool, int device, void* stream, std::mt19937_64& rng)
      : R(s.requests), L(s.len), N(s.requests * s.len) {
    blocks_per_req = (L + kBlockSize - 1) / kBlockSize;
    num_blocks = R * blocks_per_req + 1;
    std::vector<int32_t> perm(static_cast<std::size_t>(num_blocks));
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    std::vector<int32_t> table(perm.begin(), perm.begin() + R * blocks_per_req);
    std::vector<int64_t> sl(static_cast<std::size_t>(N));
    for (int64_t r = 0; r < R; ++r)
      for (int64_t p = 0; p < L; ++p)
        sl[static_cast<std::size_t>(r * L + p)] = int64_t{table[static_cast<std::size_t>(r * blocks_per_req + p / kBlockSize)]} * kBlockSize + p % kBlockSize;
    std::vector<int32_t> lens(static_cast<std::size_t>(R), static_cast<int32_t>(L)), cus(static_cast<std::size_t>(R + 1));
    for (int64_t r = 0; r <= R; ++r) cus[static_cast<std::size_t>(r)] = static_cast<int32_t>(r * L);
    auto up = [](DeviceBuffer& b, const auto& v) {
      b = DeviceBuffer(v.size() * sizeof(v[0]));
      b.upload(v.data(), b.bytes());
    };
    up(bt, table);
    up(seq_lens, lens);
    up(cu, cus);
    up(slots, sl);
    up(scale, std::vector<float>{kFp8Scale});
    kv_c = DeviceBuffer(static_cast<std::size_t>(N) * kLatentDim * 2);
    k_pe = DeviceBuffer(static_cast<std::size_t>(N) * kRopeDim * 2);
    k = DeviceBuffer(static_cast<std::size_t>(N) * kDsv4HeadDim * 2);
    dst = DeviceBuffer(static_cast<std::size_t>(N) * 2 * kHeadDim);
    fill_from_pool(pool, kv_c.get(), kv_c.bytes(), stream);
    fill_from_pool(pool, k_pe.get(), k_pe.bytes(), stream);
    fill_from_pool(pool, k.get(), k.bytes(), stream);
    dst.fill(0x7B);
    const Device dev = Device::cuda(device);
    for (int f = 0; f < 4; ++f) {
      c[f].desc = {static_cast<CacheFormat>(f), num_blocks, kBlockSize, 0};
      cache[f] = DeviceBuffer(static_cast<std::size_t>(c[f].desc.total_bytes()));
      cache[f].fill(0x3A);
      c[f].data = cache[f].get();
      c[f].device = dev;
      c[f].scale = scale.as<float>();
    }
    // Real tokens in every cache, written by the ops themselves.
    Stream st{stream};
    for (int f = 0; f < 3; ++f) write_cache(kv(), pe(), slot_t(), c[f], st);
    dsv4_write(k_t(), slot_t(), c[3], st);
  }
  Device dev() const { return c[0].device; }
  Tensor kv() const { return Tensor(kv_c.get(), DType::bf16, {N, kLatentDim}, dev()); }
  Tensor pe() const { return Tensor(k_pe.get(), DType::bf16, {N, kRopeDim}, dev()); }
  Tensor k_t() const { return Tensor(k.get(), DType::bf16, {N, kDsv4HeadDim}, dev()); }
  Tensor slot_t() const { return Tensor(slots.get(), DType::i64, {N}, dev()); }
  Tensor bt_t() const { return Tensor(bt.get(), DType::i32, {R, blocks_per_req}, dev()); }
  Tensor cu_t() const { return Tensor(cu.get(), DType::i32, {R + 1}, dev()); }
  Tensor lens_t() const { return Tensor(seq_lens.get(), DType::i32, {R}, dev()); }
  Tensor raw_dst(CacheFormat f) const { return Tensor(dst.get(), DType::u8, {N, token_bytes(f)}, dev()); }
  Tensor bf16_dst(int width) const { return Tensor(dst.get(), DType::bf16, {N, width}, dev()); }
  Tensor dsv4_out() const { return Tensor(dst.get(), DType::bf16, {R, L, kDsv4HeadDim}, dev()); }
};

std::string shape_name(const Shape& s) { return std::to_string(s.requests) + "x" + std::to_string(s.len); }

}  // namespace

int run_cache(const BenchOptions& opts) {
  const int device = opts.device;
  Device dev = Device::cuda(device);
  const std::string name = device_name(device);
  std::cout << "mlakv bench cache on " << name << " (device " << device << ")\n";
  const double copy = measure_copy_gbps(device);
  std::cout << "copy ceiling: " << copy << " GB/s\n";
  const std::size_t l2 = l2_bytes(device);

  BenchStream stream;
  {
    // What the smallest shapes are measured against: one launch that moves nothing, timed alike.
    DeviceBuffer tiny(16);
    const double floor_us = time_us(
        [&](int) { ck(cudaMemsetAsync(tiny.get(), 0, 16, static_cast<cudaStream_t>(stream.get())), "cudaMemsetAsync"); },
        stream.get(), {5, opts.iters});
    std::cout << "launch floor: " << floor_us << " us (a 16-byte memset, timed the same way)\n";
  }
  // Random bf16 values N(0, 1) as the source of every input buffer.
  DeviceBuffer pool(std::size_t{32} << 20);
  {
    std::mt19937_64 g(7);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<uint16_t> h(pool.bytes() / 2);
    for (auto& x : h) x = num::f32_to_bf16(nd(g));
    pool.upload(h.data(), pool.bytes());
  }

  std::vector<Shape> shapes = {{1, 2048}, {1, 32000}, {1, 131072}, {64, 2048}, {128, 8192}};
  if (opts.quick) shapes = {{1, 2048}, {16, 2048}};
  std::vector<Result> results;
  std::mt19937_64 rng(42);
  TimeOptions t{5, opts.iters};
  std::cout << "\n";
  print_table(std::cout, {}, copy);

  for (const Shape& s : shapes) {
    const int64_t N = s.requests * s.len;
    // Smallest op working set: a raw fp8 gather, 576 bytes read and written per token.
    const double min_ws = static_cast<double>(N) * 2 * 576;
    const int copies = static_cast<int>(std::clamp<double>(std::ceil(3.0 * static_cast<double>(l2) / min_ws), 1, 64));
    std::vector<std::unique_ptr<Set>> sets;
    for (int i = 0; i < copies; ++i) sets.push_back(std::make_unique<Set>(s, pool, device, stream.get(), rng));
    stream.sync();
    Stream st{stream.get()};

    auto run = [&](const std::string& op, CacheFormat f, double bytes_per_token, const std::function<void(Set&)>& fn) {
      if (!selected(opts, op, format_name(f), shape_name(s))) return;
      Result r;
      r.op = op;
      r.format = format_name(f);
      r.shape = shape_name(s);
      r.requests = s.requests;
      r.tokens = N;
      r.bytes = bytes_per_token * static_cast<double>(N);
      r.us = time_us([&](int i) { fn(*sets[static_cast<std::size_t>(i) % sets.size()]); }, stream.get(), t);
      finish(r, copy);
      print_row(std::cout, r);
      results.push_back(r);
    };

    for (CacheFormat f : {CacheFormat::bf16, CacheFormat::fp8, CacheFormat::fp8_ds_mla}) {
      const int fi = static_cast<int>(f);
      run("write_cache", f, 2.0 * kHeadDim + static_cast<double>(token_bytes(f)),
          [&](Set& x) { write_cache(x.kv(), x.pe(), x.slot_t(), x.c[fi], st); });
    }
    run("dsv4_write", CacheFormat::dsv4, 2.0 * kDsv4HeadDim + static_cast<double>(token_bytes(CacheFormat::dsv4)),
        [&](Set& x) { dsv4_write(x.k_t(), x.slot_t(), x.c[3], st); });
    for (CacheFormat f : {CacheFormat::bf16, CacheFormat::fp8, CacheFormat::fp8_ds_mla, CacheFormat::dsv4}) {
      const int fi = static_cast<int>(f);
      run("gather_cache", f, 2.0 * static_cast<double>(token_bytes(f)),
          [&](Set& x) { gather_cache(x.c[fi], x.bt_t(), x.cu_t(), x.raw_dst(f), {}, st); });
    }
    for (CacheFormat f : {CacheFormat::bf16, CacheFormat::fp8, CacheFormat::fp8_ds_mla, CacheFormat::dsv4}) {
      const int fi = static_cast<int>(f);
      const int width = CacheDesc{f, 1, kBlockSize, 0}.row_width();
      run("gather_dequant_cache", f, static_cast<double>(token_bytes(f)) + 2.0 * width,
          [&](Set& x) { gather_dequant_cache(x.c[fi], x.bt_t(), x.cu_t(), x.bf16_dst(width), {}, st); });
    }
    run("dsv4_dequant_gather", CacheFormat::dsv4, static_cast<double>(token_bytes(CacheFormat::dsv4)) + 2.0 * kDsv4HeadDim,
        [&](Set& x) { dsv4_dequant_gather(x.c[3], x.bt_t(), x.lens_t(), x.dsv4_out(), std::nullopt, 0, st); });
    stream.sync();
  }

  report(name, copy, results, opts.json_path);
  (void)dev;
  return 0;
}

#else

int run_cache(const BenchOptions&) { throw Error("mlakv bench cache: this build has no CUDA backend"); }

#endif

}  // namespace mlakv::bench
