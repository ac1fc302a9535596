// `mlakv bench decode`: mla_decode on the SPEC §7 shapes and a grid of batch × context × heads,
// for every cache format, against the device-to-device copy ceiling measured in the same run.
//
// GB/s counts the cache bytes the op must read (B · ctx · token bytes); TFLOP/s counts
// 2 · B · s_q · H · ctx · (576 + 512). Caches hold valid random tokens (N(0,1) bf16; e4m3 codes
// with per-tensor or per-tile scales), block size 64, shuffled physical blocks; shapes whose
// cache would fit in L2 get several copies of it, used in turn. Each timed call stands between two
// events; --back-to-back N times N calls in a row instead (a decode loop's steady state, where a
// step's first grid may start under the previous step's last one) and reports the time per call.
#include <algorithm>
#include <cstdlib>
#include <cmath>
#include <cstring>
#include <iostream>
#include <numeric>
#include <random>

#include "bench_util.hpp"
#include "mlakv/mlakv.hpp"

#ifdef MLAKV_DECODE_TRACE
#include <fstream>
namespace mlakv::cuda::mla {
std::vector<uint64_t> read_decode_trace();  // the measurement build's stamps (src/cuda/mla_decode.cu)
}
#endif

namespace mlakv::bench {

#if MLAKV_WITH_CUDA

namespace {

constexpr int kBlockSize = 64;

struct Shape {
  CacheFormat format;
  int batch, heads, ctx, s_q;
  bool mma = false;  ///< force the mma.sync kernel (the before/after of the sm90 kernel in one run)
};

std::string shape_name(const Shape& s) {
  return "B=" + std::to_string(s.batch) + " H=" + std::to_string(s.heads) + " ctx=" + std::to_string(s.ctx) +
         (s.s_q > 1 ? " s_q=" + std::to_string(s.s_q) : "");
}

/// `n` valid tokens of format f (one encoding of N(0,1) rows), as stored bytes.
std::vector<uint8_t> token_pool(CacheFormat f, int64_t n, std::mt19937_64& g) {
  const int64_t tb = CacheDesc{f, 1, kBlockSize, 0}.token_bytes();
  std::vector<uint8_t> v(static_cast<std::size_t>(n * tb));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int64_t t = 0; t < n; ++t) {
    uint8_t* p = v.data() + t * tb;
    auto put_bf16 = [&](uint8_t* dst, float x) {
      const uint16_t b = num::f32_to_bf16(x);
      std::memcpy(dst, &b, 2);
    };
    switch (f) {
      case CacheFormat::bf16:
        for (int i = 0; i < kHeadDim; ++i) put_bf16(p + 2 * i, nd(g));
        break;
      case CacheFormat::fp8:  // per-tensor scale 1/64: values in ±4 use the e4m3 range
        for (int i = 0; i < kHeadDim; ++i) p[i] = num::f32_to_e4m3(nd(g) * 64.0f);
        break;
      default: {
        float x[kLatentDim];
        for (float& e : x) e = nd(g);
        for (int tile = 0; tile < 4; ++tile) {
          float amax = 0;
          for (int i = 0; i < 128; ++i) amax = std::max(amax, std::fabs(x[tile * 128 + i]));
          const float s = std::max(amax / 448.0f, 1.17549435e-38f);
          for (int i = 0; i < 128; ++i) p[tile * 128 + i] = num::f32_to_e4m3(x[tile * 128 + i] / s);
          std::memcpy(p + 512 + 4 * tile, &s, 4);
        }
        for (int i = 0; i < kRopeDim; ++i) put_bf16(p + 528 + 2 * i, nd(g));
      }
    }
  }
  return v;
}

}  // namespace

int run_decode(const BenchOptions& opts) {
  const int device = opts.device;
  const Device dev = Device::cuda(device);
  const std::string name = device_name(device);
  std::cout << "mlakv bench decode on " << name << " (device " << device << ")\n";
  const double copy = measure_copy_gbps(device);
  std::cout << "copy ceiling: " << copy << " GB/s\n";
  const std::size_t l2 = l2_bytes(device);

  const std::vector<CacheFormat> formats = {CacheFormat::bf16, CacheFormat::fp8, CacheFormat::fp8_ds_mla};
  std::vector<Shape> shapes;
  for (CacheFormat f : formats) {  // SPEC §7
    shapes.push_back({f, 128, 16, 4096, 1});
    shapes.push_back({f, 64, 16, 16384, 1});
    shapes.push_back({f, 1, 16, 65536, 1});
    shapes.push_back({f, 1, 128, 32768, 1});
    shapes.push_back({f, 128, 128, 4096, 1});
  }
  for (CacheFormat f : formats) {  // a DCP rank's local decode at W = 2: both ranks' 16 heads
    shapes.push_back({f, 64, 32, 32768, 1});
    shapes.push_back({f, 8, 32, 65536, 1});
  }
  for (const Shape s : std::vector<Shape>(shapes.begin(), shapes.begin() + 5)) {  // bf16 on the mma.sync kernel
    Shape m = s;
    m.mma = true;
    shapes.push_back(m);
  }
  if (!opts.quick)
    for (CacheFormat f : formats)
      for (int h : {16, 128})
        for (int b : {1, 8, 32, 128})
          for (int ctx : {1024, 8192, 65536}) shapes.push_back({f, b, h, ctx, 1});

  BenchStream stream;
  const Stream st{stream.get()};
  std::mt19937_64 rng(42);
  std::vector<Result> results;
  TimeOptions t{5, opts.iters};
  std::cout << "\n";
  print_table(std::cout, {}, copy);

  for (const Shape& s : shapes) {
    const std::string fmt = std::string(format_name(s.format)) + (s.mma ? "/mma" : "");
    if (!selected(opts, "mla_decode", fmt, shape_name(s))) continue;
    const CacheDesc unit{s.format, 1, kBlockSize, 0};
    const int64_t tb = unit.token_bytes();
    const int64_t blocks_per_req = (s.ctx + kBlockSize - 1) / kBlockSize;
    const int64_t need_blocks = s.batch * blocks_per_req;
    const double cache_bytes = static_cast<double>(need_blocks) * kBlockSize * static_cast<double>(tb);
    const int copies = static_cast<int>(std::clamp<double>(std::ceil(3.0 * static_cast<double>(l2) / cache_bytes), 1, 16));
    const int64_t num_blocks = need_blocks * copies;

    Cache cache;
    cache.desc = {s.format, num_blocks, kBlockSize, 0};
    cache.device = dev;
    DeviceBuffer cache_buf(static_cast<std::size_t>(cache.desc.total_bytes()));
    {
      const std::vector<uint8_t> pool = token_pool(s.format, 8192, rng);
      for (std::size_t off = 0; off < cache_buf.bytes(); off += pool.size())
        cache_buf.upload(pool.data(), std::min(pool.size(), cache_buf.bytes() - off), off);
    }
    cache.data = cache_buf.get();
    DeviceBuffer scale(4);
    const float k_scale = 1.0f / 64.0f;
    scale.upload(&k_scale, 4);
    cache.scale = scale.as<float>();

    std::vector<int32_t> perm(static_cast<std::size_t>(num_blocks));
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    DeviceBuffer bt(perm.size() * 4);  // copy i uses blocks [i·need, (i+1)·need) of the permutation
    bt.upload(perm.data(), bt.bytes());
    const std::vector<int32_t> lens(static_cast<std::size_t>(s.batch), s.ctx);
    DeviceBuffer seq(lens.size() * 4);
    seq.upload(lens.data(), seq.bytes());

    const int64_t rows = int64_t{s.batch} * s.s_q * s.heads;
    std::vector<uint16_t> qh(static_cast<std::size_t>(rows * kHeadDim));
    {
      std::normal_distribution<float> nd(0.0f, 1.0f);
      for (auto& x : qh) x = num::f32_to_bf16(nd(rng));
    }
    DeviceBuffer q(qh.size() * 2), out(static_cast<std::size_t>(rows) * kLatentDim * 2), lse(static_cast<std::size_t>(rows) * 4);
    q.upload(qh.data(), q.bytes());
    const std::size_t ws_bytes = mla_decode_workspace_size(s.batch, s.s_q, s.heads, dev);
    DeviceBuffer ws(std::max<std::size_t>(ws_bytes, 1));

    DecodeParams p;
    p.softmax_scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));
    const Tensor qt(q.get(), DType::bf16, {s.batch, s.s_q, s.heads, kHeadDim}, dev);
    const Tensor ot(out.get(), DType::bf16, {s.batch, s.s_q, s.heads, kLatentDim}, dev);
    const Tensor lt(lse.get(), DType::f32, {s.batch, s.s_q, s.heads}, dev);
    const Tensor sl(seq.get(), DType::i32, {s.batch}, dev);

    Result r;
    r.op = "mla_decode";
    r.format = fmt;
    r.shape = shape_name(s) + (opts.back_to_back > 1 ? " b2b" + std::to_string(opts.back_to_back) : "");
    r.requests = s.batch;
    r.tokens = int64_t{s.batch} * s.ctx;
    r.bytes = static_cast<double>(s.batch) * s.ctx * static_cast<double>(tb);
    if (s.mma) setenv("MLAKV_DECODE_KERNEL", "mma", 1);
    const int b2b = opts.back_to_back;
    double host_us = 0;
    r.us = time_us(
               [&](int i) {
                 for (int c = 0; c < b2b; ++c) {
                   const Tensor btt(bt.as<int32_t>() + static_cast<std::size_t>((i * b2b + c) % copies) * need_blocks,
                                    DType::i32, {s.batch, blocks_per_req}, dev);
                   mla_decode(qt, cache, btt, sl, ot, lt, p, Workspace{ws.get(), ws_bytes}, st);
                 }
               },
               stream.get(), t, &host_us) /
           b2b;
    if (s.mma) unsetenv("MLAKV_DECODE_KERNEL");
#ifdef MLAKV_DECODE_TRACE
    if (const char* dir = std::getenv("MLAKV_TRACE_DIR")) {
      std::string name = "trace-" + fmt + "-" + shape_name(s) + ".bin";  // one file name: no '/' or ' '
      std::replace(name.begin(), name.end(), ' ', '_');
      std::replace(name.begin(), name.end(), '/', '-');
      const std::vector<uint64_t> tr = cuda::mla::read_decode_trace();
      std::ofstream(std::string(dir) + "/" + name, std::ios::binary)
          .write(reinterpret_cast<const char*>(tr.data()), static_cast<std::streamsize>(tr.size() * 8));
    }
#endif
    const double flops = 2.0 * s.batch * s.s_q * s.heads * static_cast<double>(s.ctx) * (kHeadDim + kLatentDim);
    // host_us: the host's time to enqueue one step (mla_decode's validation and launches).
    r.extra = {{"batch", s.batch}, {"heads", s.heads}, {"context", s.ctx}, {"s_q", s.s_q}, {"host_us", host_us / b2b}};
    finish(r, copy, flops);
    print_row(std::cout, r);
    results.push_back(r);
    stream.sync();
  }

  report(name, copy, results, opts.json_path);
  return 0;
}

#else

int run_decode(const BenchOptions&) { throw Error("mlakv bench decode: this build has no CUDA backend"); }

#endif

}  // namespace mlakv::bench
