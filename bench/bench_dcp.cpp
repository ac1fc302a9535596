// `mlakv bench dcp`: one layer's DCP decode step at W = 1 (plain mla_decode) and W = 2 (the
// whole dcp::decode over NCCL, with each merge; the faster is the step's time), with the
// collectives timed alone on same-size buffers. W = 2 workspaces come from
// Communicator::allocate (NCCL symmetric windows unless MLAKV_NCCL_SYMMETRIC=0). Then the
// chunked-prefill context gather with FP8 bytes on the wire against bf16 bytes; KV bytes per GPU.
//
// Timing across ranks: before every timed step the L2 is flushed and the ranks meet in a 4-byte
// all-gather, both enqueued ahead of the step's start event, so the step starts on both GPUs
// together and neither waits on its host. A step's time is the slower rank's; the median over
// iterations is reported. Steps are captured in CUDA graphs where capture works.
#include <algorithm>
#include <cstdio>
#include <functional>
#include <iostream>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "bench.hpp"
#include "bench_util.hpp"
#include "mlakv/mlakv.hpp"

#if MLAKV_WITH_CUDA
#include <cuda_runtime.h>

#include "bench_cuda.hpp"

#include "mlakv/nccl.hpp"
#endif

namespace mlakv::bench {

#if MLAKV_WITH_CUDA

namespace {

cudaStream_t cs(const BenchStream& s) { return static_cast<cudaStream_t>(s.get()); }

constexpr int kHeadsPerRank = 16;
constexpr int kBlock = 64;
constexpr std::size_t kFlushBytes = std::size_t{256} << 20;  // several times any L2
constexpr std::size_t kPoolBytes = std::size_t{64} << 20;

/// Random bytes whose every reading is a small finite number: as e4m3 codes 0x20..0x3f with a
/// random sign (0.016 .. 1.9), and as the high byte of a bf16 or float likewise small.
std::vector<uint8_t> pool_bytes() {
  std::vector<uint8_t> v(kPoolBytes);
  std::mt19937_64 g(7);
  for (auto& b : v) {
    const auto r = g();
    b = static_cast<uint8_t>(0x20 + (r & 0x1f)) | static_cast<uint8_t>((r >> 8) & 0x80);
  }
  return v;
}

/// One GPU's standing resources.
struct Rank {
  int device = 0;
  std::unique_ptr<BenchStream> stream;
  DeviceBuffer flush, meet, pool;
  DeviceBuffer cache;  // sized for the largest case, reused by all
};

void init_rank(Rank& r, int device, std::size_t cache_bytes, const std::vector<uint8_t>& pool) {
  r.device = device;
  ck(cudaSetDevice(device), "cudaSetDevice");
  r.stream = std::make_unique<BenchStream>();
  r.flush = DeviceBuffer(kFlushBytes);
  r.meet = DeviceBuffer(4096);
  r.meet.fill(0);
  r.pool = DeviceBuffer(kPoolBytes);
  r.pool.upload(pool.data(), pool.size());
  r.cache = DeviceBuffer(cache_bytes);
  fill_from_pool(r.pool, r.cache.get(), cache_bytes, r.stream->get());
  r.stream->sync();
}

/// A step enqueued on rank r's stream (directly or as a graph launch).
using Body = std::function<void(int rank)>;

/// Captures body(r) into a graph on every rank; false (and nothing captured) where capture fails.
bool capture(std::vector<Rank*>& ranks, const Body& body, std::vector<cudaGraphExec_t>& exec) {
  const int W = static_cast<int>(ranks.size());
  exec.assign(static_cast<std::size_t>(W), nullptr);
  std::vector<int> ok(static_cast<std::size_t>(W), 0);
  run_ranks(W, [&](int r) {
    ck(cudaSetDevice(ranks[r]->device), "cudaSetDevice");
    cudaStream_t s = cs(*ranks[r]->stream);
    cudaGraph_t g = nullptr;
    if (cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) != cudaSuccess) return;
    try {
      body(r);
    } catch (...) {
      cudaStreamEndCapture(s, &g);
      if (g) cudaGraphDestroy(g);
      cudaGetLastError();
      return;
    }
    if (cudaStreamEndCapture(s, &g) != cudaSuccess || !g) {
      cudaGetLastError();
      return;
    }
    cudaGraphExec_t e = nullptr;
    if (cudaGraphInstantiate(&e, g, 0) == cudaSuccess) {
      exec[static_cast<std::size_t>(r)] = e;
      ok[static_cast<std::size_t>(r)] = 1;
    }
    cudaGraphDestroy(g);
    cudaGetLastError();
  });
  if (std::all_of(ok.begin(), ok.end(), [](int x) { return x; })) return true;
  for (auto& e : exec)
    if (e) cudaGraphExecDestroy(e);
  exec.assign(exec.size(), nullptr);
  return false;
}

/// Median over iterations of the slowest rank's time (µs) of one step; see the file comment.
double time_step(std::vector<Rank*> ranks, const std::vector<Communicator*>& comms, const Body& body, int iters,
                 bool use_graph, bool* graphed = nullptr) {
  const int W = static_cast<int>(ranks.size());
  std::vector<cudaGraphExec_t> exec;
  const bool g = use_graph && capture(ranks, body, exec);
  if (graphed) *graphed = g;
  const int warmup = 3, n = std::max(1, iters);
  std::vector<std::vector<double>> us(static_cast<std::size_t>(W), std::vector<double>(static_cast<std::size_t>(n)));
  run_ranks(W, [&](int r) {
    Rank& rk = *ranks[static_cast<std::size_t>(r)];
    ck(cudaSetDevice(rk.device), "cudaSetDevice");
    cudaStream_t s = cs(*rk.stream);
    std::vector<cudaEvent_t> ev(2 * static_cast<std::size_t>(n));
    for (auto& e : ev) ck(cudaEventCreate(&e), "cudaEventCreate");
    for (int i = 0; i < warmup + n; ++i) {
      ck(cudaMemsetAsync(rk.flush.get(), i & 0xff, kFlushBytes, s), "cudaMemsetAsync");
      if (W > 1) comms[static_cast<std::size_t>(r)]->all_gather(rk.meet.get(), rk.meet.as<uint8_t>() + 256, 4, Stream{s});
      if (i >= warmup) ck(cudaEventRecord(ev[2 * static_cast<std::size_t>(i - warmup)], s), "cudaEventRecord");
      if (g) ck(cudaGraphLaunch(exec[static_cast<std::size_t>(r)], s), "cudaGraphLaunch");
      else body(r);
      if (i >= warmup) ck(cudaEventRecord(ev[2 * static_cast<std::size_t>(i - warmup) + 1], s), "cudaEventRecord");
    }
    ck(cudaStreamSynchronize(s), "cudaStreamSynchronize");
    for (int i = 0; i < n; ++i) {
      float ms = 0;
      ck(cudaEventElapsedTime(&ms, ev[2 * static_cast<std::size_t>(i)], ev[2 * static_cast<std::size_t>(i) + 1]),
         "cudaEventElapsedTime");
      us[static_cast<std::size_t>(r)][static_cast<std::size_t>(i)] = 1000.0 * ms;
    }
    for (auto& e : ev) cudaEventDestroy(e);
    if (g) cudaGraphExecDestroy(exec[static_cast<std::size_t>(r)]);
  });
  std::vector<double> worst(static_cast<std::size_t>(n), 0.0);
  for (int i = 0; i < n; ++i)
    for (int r = 0; r < W; ++r) worst[static_cast<std::size_t>(i)] = std::max(worst[static_cast<std::size_t>(i)], us[static_cast<std::size_t>(r)][static_cast<std::size_t>(i)]);
  std::nth_element(worst.begin(), worst.begin() + n / 2, worst.end());
  return worst[static_cast<std::size_t>(n / 2)];
}

/// A shuffled block table [batch, blocks] over blocks [0, batch · blocks), on the current device.
DeviceBuffer block_table(int64_t batch, int64_t blocks, uint64_t seed) {
  std::vector<int32_t> ids(static_cast<std::size_t>(batch * blocks));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), std::mt19937_64(seed));
  DeviceBuffer d(ids.size() * 4);
  d.upload(ids.data(), ids.size() * 4);
  return d;
}

DeviceBuffer int_vector(const std::vector<int32_t>& v) {
  DeviceBuffer d(v.size() * 4);
  d.upload(v.data(), v.size() * 4);
  return d;
}

std::string kfmt(int64_t ctx) { return ctx % 1024 == 0 ? std::to_string(ctx / 1024) + "K" : std::to_string(ctx); }

struct StepCase {
  CacheFormat format;
  int batch;
  int64_t ctx;
};

/// Per-rank buffers of one decode step.
struct StepBuffers {
  DeviceBuffer bt, lens, q, out, lse, ws, scale;
  std::unique_ptr<CommBuffer> comm_ws;  // W > 1: the workspace, from the communicator
  Cache cache;
  std::size_t ws_bytes = 0;
  void* workspace() const { return comm_ws ? comm_ws->data() : ws.get(); }
};

/// Gives each rank's buffers a workspace of ws_bytes from its communicator (a collective call: one
/// thread per rank), or with `release` frees them again (also collective).
template <class Buffers>
void comm_workspaces(std::vector<Buffers>& b, const std::vector<Communicator*>& comms, bool release = false) {
  run_ranks(static_cast<int>(comms.size()), [&](int r) {
    auto& x = b[static_cast<std::size_t>(r)];
    ck(cudaSetDevice(comms[static_cast<std::size_t>(r)]->device().index), "cudaSetDevice");
    if (release) x.comm_ws.reset();
    else x.comm_ws = comms[static_cast<std::size_t>(r)]->allocate(x.ws_bytes);
  });
}

Result make_result(const std::string& op, CacheFormat f, int world, int batch, int64_t ctx, double us, double comm_us,
                   double bytes, double copy_gbps, const std::string& shape) {
  Result r;
  r.op = op;
  r.format = format_name(f);
  r.shape = shape;
  r.requests = batch;
  r.tokens = ctx;
  r.us = us;
  r.bytes = bytes;
  r.extra = {{"world", static_cast<double>(world)}, {"batch", static_cast<double>(batch)}, {"context", static_cast<double>(ctx)}, {"comm_us", comm_us}};
  finish(r, copy_gbps);
  return r;
}

}  // namespace

int run_dcp(const BenchOptions& opts) {
  const int n_gpus = cuda_device_count();
  if (n_gpus < 1) throw Error("mlakv bench dcp: no CUDA device");
  const bool two = n_gpus >= opts.device + 2 || n_gpus >= 2;
  const int dev0 = two && n_gpus < opts.device + 2 ? 0 : opts.device;
  const int W = two ? 2 : 1;
  const double copy = measure_copy_gbps(dev0);
  std::cout << "mlakv bench dcp on " << device_name(dev0) << (two ? " x 2" : " (one GPU: W = 2 cases skipped)")
            << ", " << kHeadsPerRank << " heads per rank, block size " << kBlock << "\n";

  const std::vector<CacheFormat> formats{CacheFormat::bf16, CacheFormat::fp8, CacheFormat::fp8_ds_mla};
  const std::vector<int> batches = opts.quick ? std::vector<int>{1, 8} : std::vector<int>{1, 8, 64};
  const std::vector<int64_t> ctxs = opts.quick ? std::vector<int64_t>{8192, 65536} : std::vector<int64_t>{8192, 65536, 131072};
  const int iters = opts.quick ? std::min(opts.iters, 10) : opts.iters;
  const int64_t max_tokens = static_cast<int64_t>(*std::max_element(batches.begin(), batches.end())) *
                             *std::max_element(ctxs.begin(), ctxs.end());

  const std::vector<uint8_t> pool = pool_bytes();
  // ranks[0] holds W = 1 (full context), group[r] the shards of W = 2.
  std::vector<Rank> single(1);
  init_rank(single[0], dev0, static_cast<std::size_t>(max_tokens) * 2 * kHeadDim, pool);
  std::vector<Rank> group(static_cast<std::size_t>(W));
  std::vector<std::unique_ptr<Communicator>> comms;
  std::vector<Communicator*> comm_ptrs;
  std::vector<Rank*> group_ptrs;
  for (auto& g : group) group_ptrs.push_back(&g);
  if (two) {
    for (int r = 0; r < W; ++r)
      init_rank(group[static_cast<std::size_t>(r)], dev0 + r, static_cast<std::size_t>(max_tokens / W + kBlock * 64) * 2 * kHeadDim, pool);
    comms = make_nccl_group({dev0, dev0 + 1});
    for (auto& c : comms) comm_ptrs.push_back(c.get());
    struct Probe {
      std::unique_ptr<CommBuffer> comm_ws;
      std::size_t ws_bytes = 4096;
    };
    std::vector<Probe> probe(static_cast<std::size_t>(W));
    comm_workspaces(probe, comm_ptrs);
    std::cout << "collective buffers (Communicator::allocate): "
              << (probe[0].comm_ws->symmetric() ? "NCCL symmetric windows" : "plain device memory") << "\n";
    comm_workspaces(probe, comm_ptrs, true);
  }

  std::vector<Result> results;
  const float fp8_scale = 0.05f;

  // Builds rank r's buffers for a step over `tokens_local` tokens per request (world w).
  auto step_buffers = [&](Rank& rk, const StepCase& c, int w, int heads_q, int rank) {
    ck(cudaSetDevice(rk.device), "cudaSetDevice");
    StepBuffers b;
    const int64_t local = dcp::local_length(c.ctx, rank, w, 1);
    const int64_t blocks = (local + kBlock - 1) / kBlock;
    b.bt = block_table(c.batch, blocks, 11 + static_cast<uint64_t>(rank));
    b.lens = int_vector(std::vector<int32_t>(static_cast<std::size_t>(c.batch), static_cast<int32_t>(c.ctx)));
    b.q = DeviceBuffer(static_cast<std::size_t>(c.batch) * heads_q * kHeadDim * 2);
    fill_from_pool(rk.pool, b.q.get(), b.q.bytes(), rk.stream->get());
    b.out = DeviceBuffer(static_cast<std::size_t>(c.batch) * kHeadsPerRank * kLatentDim * 2);
    b.lse = DeviceBuffer(static_cast<std::size_t>(c.batch) * kHeadsPerRank * 4);
    b.scale = DeviceBuffer(4);
    b.scale.upload(&fp8_scale, 4);
    b.cache.data = rk.cache.get();
    b.cache.desc = {c.format, c.batch * blocks, kBlock, 0};
    b.cache.device = Device::cuda(rk.device);
    b.cache.scale = b.scale.as<float>();
    b.ws_bytes = w == 1 ? mla_decode_workspace_size(c.batch, 1, kHeadsPerRank, b.cache.device)
                        : dcp::decode_workspace_size(c.batch, 1, kHeadsPerRank, w, b.cache.device);
    if (w == 1) b.ws = DeviceBuffer(b.ws_bytes);
    rk.stream->sync();
    return b;
  };

  std::cout << "\n== DCP decode step, one layer (us: whole step, slower rank; comm: its collectives alone; attn: the "
               "local mla_decode alone; rest: the DCP kernels and gaps) ==\n";
  std::printf("%-11s %5s %7s %10s %10s %10s %10s %10s %8s %6s %6s\n", "format", "B", "ctx", "W=1 us", "W=2 us",
              "comm us", "attn us", "rest us", "W2/W1", "merge", "graph");
  for (CacheFormat f : formats)
    for (int64_t ctx : ctxs)
      for (int B : batches) {
        const StepCase c{f, B, ctx};
        const Device d0 = Device::cuda(dev0);
        // W = 1: the plain single-GPU attention over the whole context.
        StepBuffers s = step_buffers(single[0], c, 1, kHeadsPerRank, 0);
        DecodeParams p;
        p.softmax_scale = 0.0417f;
        const int64_t blocks1 = (ctx + kBlock - 1) / kBlock;
        bool g1 = false;
        const double us1 = time_step(
            {&single[0]}, {},
            [&](int) {
              mla_decode(Tensor(s.q.get(), DType::bf16, {B, 1, kHeadsPerRank, kHeadDim}, d0), s.cache,
                         Tensor(s.bt.get(), DType::i32, {B, blocks1}, d0), Tensor(s.lens.get(), DType::i32, {B}, d0),
                         Tensor(s.out.get(), DType::bf16, {B, 1, kHeadsPerRank, kLatentDim}, d0),
                         Tensor(s.lse.get(), DType::f32, {B, 1, kHeadsPerRank}, d0), p, {s.ws.get(), s.ws_bytes},
                         Stream{single[0].stream->get()});
            },
            iters, true, &g1);
        const CacheDesc desc{f, 1, kBlock, 0};
        const double kv1 = static_cast<double>(B) * ctx * desc.token_bytes();
        results.push_back(make_result("dcp_decode_step", f, 1, B, ctx, us1, 0, kv1, copy,
                                      "W1 B" + std::to_string(B) + " " + kfmt(ctx)));
        double us2 = 0, comm2 = 0, attn2 = 0;
        bool g2 = false, symmetric = false;
        const char* merge_name = "-";
        if (two) {
          std::vector<StepBuffers> sb;
          for (int r = 0; r < W; ++r) sb.push_back(step_buffers(group[static_cast<std::size_t>(r)], c, W, kHeadsPerRank, r));
          const int64_t blocks2 = (dcp::local_length(ctx, 0, W, 1) + kBlock - 1) / kBlock;
          dcp::DecodeOptions o;
          o.softmax_scale = 0.0417f;
          o.merge = dcp::Merge::all_to_all;
          // The local attention alone (all W·N heads over rank 0's shard), for the split below.
          const int Hq = W * kHeadsPerRank;
          DeviceBuffer qa, oa, la, wsa;
          ck(cudaSetDevice(group[0].device), "cudaSetDevice");
          qa = DeviceBuffer(static_cast<std::size_t>(B) * Hq * kHeadDim * 2);
          fill_from_pool(group[0].pool, qa.get(), qa.bytes(), group[0].stream->get());
          oa = DeviceBuffer(static_cast<std::size_t>(B) * Hq * kLatentDim * 4);
          la = DeviceBuffer(static_cast<std::size_t>(B) * Hq * 4);
          const std::size_t wsa_bytes = mla_decode_workspace_size(B, 1, Hq, sb[0].cache.device);
          wsa = DeviceBuffer(wsa_bytes);
          group[0].stream->sync();
          DecodeParams pa;
          pa.softmax_scale = 0.0417f;
          pa.shard = {W, 0, 1};
          attn2 = time_step(
              {&group[0]}, {},
              [&](int) {
                const Device d = sb[0].cache.device;
                mla_decode(Tensor(qa.get(), DType::bf16, {B, 1, Hq, kHeadDim}, d), sb[0].cache,
                           Tensor(sb[0].bt.get(), DType::i32, {B, blocks2}, d),
                           Tensor(sb[0].lens.get(), DType::i32, {B}, d),
                           Tensor(oa.get(), DType::f32, {B, 1, Hq, kLatentDim}, d),
                           Tensor(la.get(), DType::f32, {B, 1, Hq}, d), pa, {wsa.get(), wsa_bytes},
                           Stream{group[0].stream->get()});
              },
              iters, true);
          comm_workspaces(sb, comm_ptrs);
          // The whole step with each merge; the faster one is the step's time.
          auto step_with = [&](dcp::Merge m, bool* graphed) {
            o.merge = m;
            return time_step(
                group_ptrs, comm_ptrs,
                [&](int r) {
                  const StepBuffers& b = sb[static_cast<std::size_t>(r)];
                  const Device d = b.cache.device;
                  dcp::decode(*comm_ptrs[static_cast<std::size_t>(r)],
                              Tensor(b.q.get(), DType::bf16, {B, 1, kHeadsPerRank, kHeadDim}, d), b.cache,
                              Tensor(b.bt.get(), DType::i32, {B, blocks2}, d), Tensor(b.lens.get(), DType::i32, {B}, d),
                              Tensor(b.out.get(), DType::bf16, {B, 1, kHeadsPerRank, kLatentDim}, d),
                              Tensor(b.lse.get(), DType::f32, {B, 1, kHeadsPerRank}, d), o,
                              {b.workspace(), b.ws_bytes}, Stream{group[static_cast<std::size_t>(r)].stream->get()});
                },
                iters, true, graphed);
          };
          const double us_a2a = step_with(dcp::Merge::all_to_all, &g2);
          bool g2b = false;
          const double us_rs = step_with(dcp::Merge::allgather_reduce_scatter, &g2b);
          g2 = g2 && g2b;
          // Each merge's collectives alone, on buffers of the same sizes (inside the workspace).
          const std::size_t q_bytes = static_cast<std::size_t>(B) * kHeadsPerRank * kHeadDim * 2;
          // merge (b)'s per-destination block: T·N·(512 + 1) floats
          const std::size_t a2a_bytes = static_cast<std::size_t>(B) * kHeadsPerRank * (kLatentDim + 1) * 4;
          const std::size_t lse_bytes = static_cast<std::size_t>(B) * W * kHeadsPerRank * 4;
          const std::size_t rs_count = static_cast<std::size_t>(B) * kHeadsPerRank * kLatentDim;
          auto comm_with = [&](dcp::Merge m) {
            return time_step(
                group_ptrs, comm_ptrs,
                [&](int r) {
                  const StepBuffers& b = sb[static_cast<std::size_t>(r)];
                  auto* base = static_cast<uint8_t*>(b.workspace());
                  const Stream st{group[static_cast<std::size_t>(r)].stream->get()};
                  Communicator& cm = *comm_ptrs[static_cast<std::size_t>(r)];
                  cm.all_gather(base, base + q_bytes + 256, q_bytes, st);
                  if (m == dcp::Merge::all_to_all) {
                    cm.all_to_all(base, base + W * a2a_bytes + 256, a2a_bytes, st);
                  } else {
                    cm.all_gather(base, base + lse_bytes + 256, lse_bytes, st);
                    auto* f = reinterpret_cast<float*>(base);
                    cm.reduce_scatter_sum(f, f + W * rs_count + 64, rs_count, st);
                  }
                },
                std::max(iters, 40), true);
          };
          const double comm_a2a = comm_with(dcp::Merge::all_to_all);
          const double comm_rs = comm_with(dcp::Merge::allgather_reduce_scatter);
          const bool rs_faster = us_rs < us_a2a;
          us2 = rs_faster ? us_rs : us_a2a;
          comm2 = rs_faster ? comm_rs : comm_a2a;
          symmetric = sb[0].comm_ws->symmetric();
          comm_workspaces(sb, comm_ptrs, true);
          const double kv2 = static_cast<double>(B) * dcp::local_length(ctx, 0, W, 1) * desc.token_bytes();
          results.push_back(make_result("dcp_decode_step", f, W, B, ctx, us2, comm2, kv2, copy,
                                        "W2 B" + std::to_string(B) + " " + kfmt(ctx)));
          results.back().extra.push_back({"ratio_vs_w1", us2 / us1});
          results.back().extra.push_back({"attn_us", attn2});
          results.back().extra.push_back({"us_all_to_all", us_a2a});
          results.back().extra.push_back({"us_reduce_scatter", us_rs});
          results.back().extra.push_back({"comm_us_all_to_all", comm_a2a});
          results.back().extra.push_back({"comm_us_reduce_scatter", comm_rs});
          results.back().extra.push_back({"merge_reduce_scatter", rs_faster ? 1.0 : 0.0});
          results.back().extra.push_back({"symmetric", symmetric ? 1.0 : 0.0});
          merge_name = rs_faster ? "rs" : "a2a";
        }
        std::printf("%-11s %5d %7s %10.1f %10.1f %10.1f %10.1f %10.1f %8.2f %6s %6s\n", format_name(f), B,
                    kfmt(ctx).c_str(), us1, us2, comm2, attn2, us2 - comm2 - attn2, two ? us2 / us1 : 0.0,
                    merge_name, g1 && (!two || g2) ? "yes" : "no");
        std::fflush(stdout);
      }

  if (two) {
    std::cout << "\n== Chunked-prefill context gather, W = 2, one request of 32K (FP8 bytes on the wire vs bf16) ==\n";
    std::printf("%-11s %10s %10s %12s\n", "format", "us", "comm us", "wire MB");
    const int64_t ctx = 32768;
    double bf16_us = 0;
    for (CacheFormat f : {CacheFormat::bf16, CacheFormat::fp8, CacheFormat::fp8_ds_mla, CacheFormat::dsv4}) {
      struct GatherBuffers {
        DeviceBuffer bt, cu, starts, out, scale;
        std::unique_ptr<CommBuffer> comm_ws;
        Cache cache;
        std::size_t ws_bytes = 0;
      };
      std::vector<GatherBuffers> gb(static_cast<std::size_t>(W));
      const CacheDesc probe{f, 1, kBlock, 0};
      const int64_t local = dcp::local_length(ctx, 0, W, 1), blocks = (local + kBlock - 1) / kBlock;
      for (int r = 0; r < W; ++r) {
        Rank& rk = group[static_cast<std::size_t>(r)];
        ck(cudaSetDevice(rk.device), "cudaSetDevice");
        GatherBuffers& b = gb[static_cast<std::size_t>(r)];
        b.bt = block_table(1, blocks, 23 + static_cast<uint64_t>(r));
        b.cu = int_vector({0, static_cast<int32_t>(ctx)});
        b.starts = int_vector({0});
        b.out = DeviceBuffer(static_cast<std::size_t>(ctx) * probe.row_width() * 2);
        b.scale = DeviceBuffer(4);
        b.scale.upload(&fp8_scale, 4);
        b.cache = {rk.cache.get(), {f, blocks, kBlock, 0}, Device::cuda(rk.device), b.scale.as<float>()};
        b.ws_bytes = dcp::gather_context_workspace_size(b.cache.desc, ctx, 1, W, 1);
      }
      comm_workspaces(gb, comm_ptrs);
      const double us = time_step(
          group_ptrs, comm_ptrs,
          [&](int r) {
            GatherBuffers& b = gb[static_cast<std::size_t>(r)];
            const Device d = b.cache.device;
            dcp::gather_context(*comm_ptrs[static_cast<std::size_t>(r)], b.cache,
                                Tensor(b.bt.get(), DType::i32, {1, blocks}, d), Tensor(b.cu.get(), DType::i32, {2}, d),
                                Tensor(b.starts.get(), DType::i32, {1}, d),
                                Tensor(b.out.get(), DType::bf16, {ctx, probe.row_width()}, d), 1,
                                {b.comm_ws->data(), b.ws_bytes}, Stream{group[static_cast<std::size_t>(r)].stream->get()});
          },
          iters, true);
      // The all-gather alone: each rank's capacity (ctx / W + I rows) of stored bytes.
      const std::size_t send = static_cast<std::size_t>(std::min<int64_t>(ctx, ctx / W + 1) * probe.token_bytes());
      const double comm_us = time_step(
          group_ptrs, comm_ptrs,
          [&](int r) {
            auto* base = static_cast<uint8_t*>(gb[static_cast<std::size_t>(r)].comm_ws->data());
            comm_ptrs[static_cast<std::size_t>(r)]->all_gather(base, base + send + 256, send,
                                                               Stream{group[static_cast<std::size_t>(r)].stream->get()});
          },
          std::max(iters, 40), true);
      comm_workspaces(gb, comm_ptrs, true);
      if (f == CacheFormat::bf16) bf16_us = us;
      const double wire = static_cast<double>(send) * W;
      results.push_back(make_result("dcp_gather_context", f, W, 1, ctx, us, comm_us,
                                    static_cast<double>(ctx) * probe.row_width() * 2 + wire, copy, "W2 B1 32K"));
      results.back().extra.push_back({"wire_bytes", wire});
      if (f != CacheFormat::bf16) results.back().extra.push_back({"speedup_vs_bf16_wire", bf16_us / us});
      std::printf("%-11s %10.1f %10.1f %12.2f", format_name(f), us, comm_us, wire / 1e6);
      if (f != CacheFormat::bf16) std::printf("   %.2fx faster than bf16 on the wire", bf16_us / us);
      std::printf("\n");
    }
  }

  std::cout << "\n== KV cache bytes per GPU, one request of 128K ==\n";
  std::printf("%-11s %14s %14s\n", "format", "W=1 MB", "W=2 MB");
  for (CacheFormat f : {CacheFormat::bf16, CacheFormat::fp8, CacheFormat::fp8_ds_mla, CacheFormat::dsv4}) {
    const CacheDesc d{f, 1, kBlock, 0};
    const int64_t ctx = 131072;
    double per[2];
    for (int w = 1; w <= 2; ++w) {
      const int64_t local = dcp::local_length(ctx, 0, w, 1);
      per[w - 1] = static_cast<double>((local + kBlock - 1) / kBlock) * d.stride_bytes();
      Result r;
      r.op = "dcp_kv_bytes";
      r.format = format_name(f);
      r.shape = "W" + std::to_string(w) + " B1 128K";
      r.requests = 1;
      r.tokens = ctx;
      r.extra = {{"world", static_cast<double>(w)}, {"batch", 1.0}, {"context", static_cast<double>(ctx)}, {"bytes_per_gpu", per[w - 1]}};
      results.push_back(r);
    }
    std::printf("%-11s %14.1f %14.1f\n", format_name(f), per[0] / 1e6, per[1] / 1e6);
  }

  report(device_name(dev0) + (two ? " x2" : ""), copy, results, opts.json_path);
  return 0;
}

#else

int run_dcp(const BenchOptions&) { throw Error("mlakv bench dcp: built without CUDA"); }

#endif

}  // namespace mlakv::bench
