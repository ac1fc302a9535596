// `mlakv demo`: decode on a DeepSeek-V3-shaped MLA layer with the KV cache stored in a chosen
// format and sharded over DCP ranks, checked against a bf16 single-rank reference.
//
// The workload: `batch` requests with mixed context lengths are written (through the DCP slot
// mapping) into each rank's cache, then every decode step appends one token per request on every
// rank and runs one DCP decode. Alongside runs the plain single-rank bf16 decode over the same
// tokens, which is what the format and the sharding must reproduce.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <memory>
#include <numeric>
#include <optional>
#include <random>

#include "cli_common.hpp"

namespace mlakv::cli {
namespace {

struct DemoOptions {
  std::string device = "auto";
  int heads = 16;
  int batch = 8;
  std::string context_lens = "1000,4000,2000,8000,500,16000,3000,6000";
  std::string kv_cache_dtype = "fp8";
  int dcp = 0;  // 0: not given, pick the default for the device
  int interleave = 1;
  int block_size = 64;
  int steps = 8;
  std::string merge = "a2a";
  uint64_t seed = 0;
};

// DeepSeek-V3 scales scores by 1/sqrt(qk_nope_head_dim + qk_rope_head_dim) = 1/sqrt(128 + 64).
constexpr float kSoftmaxScale = 0.07216878364870322f;
// Tokens written per prefill call: bounds the staging buffers for long contexts.
constexpr int64_t kPrefillChunk = 4096;

struct Budget {
  double out;
  double lse;
};
// SPEC §6: storage format against bf16 on N(0,1) data; DCP against one rank.
Budget format_budget(CacheFormat f) {
  switch (f) {
    case CacheFormat::fp8: return {6e-2, INFINITY};
    case CacheFormat::fp8_ds_mla: return {4e-2, INFINITY};
    default: return {4e-3, 1e-3};  // bf16: only the kernel's own rounding
  }
}
constexpr Budget kDcpBudget{4e-3, 1e-3};

/// One cache (one rank's shard, or a single-rank cache) on its device, with the buffers a decode
/// step needs there.
struct Replica {
  Device device;
  DcpShard shard;
  DeviceCache cache;
  DeviceBuffer block_table, seq_lens;
  DeviceBuffer rows, positions, token_to_req, slots;  // write staging
  DeviceBuffer q, out, lse, workspace;
  std::unique_ptr<CommBuffer> comm_workspace;  // DCP: the workspace, from the group's communicator
};

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks each request needs on the fullest rank (rank 0 holds the most: it gets every
// remainder first), and the shared block table dealing out a shuffled set of physical blocks,
// so that the demo exercises paging rather than contiguous storage.
struct Paging {
  int64_t max_blocks = 0, num_blocks = 0;
  std::vector<int32_t> table;  // [batch, max_blocks]
};
Paging make_paging(const std::vector<int64_t>& final_len, int world, int interleave, int block_size,
                   std::mt19937_64& rng) {
  Paging p;
  std::vector<int64_t> need(final_len.size());
  for (std::size_t b = 0; b < final_len.size(); ++b) {
    need[b] = ceil_div(dcp::local_length(final_len[b], 0, world, interleave), block_size);
    p.max_blocks = std::max(p.max_blocks, need[b]);
    p.num_blocks += need[b];
  }
  std::vector<int32_t> ids(static_cast<std::size_t>(p.num_blocks));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  p.table.assign(final_len.size() * static_cast<std::size_t>(p.max_blocks), 0);
  std::size_t next = 0;
  for (std::size_t b = 0; b < final_len.size(); ++b)
    for (int64_t i = 0; i < need[b]; ++i) p.table[b * static_cast<std::size_t>(p.max_blocks) + static_cast<std::size_t>(i)] = ids[next++];
  return p;
}

Replica make_replica(Device device, DcpShard shard, CacheFormat format, int block_size, const Paging& paging,
                     float fp8_scale, int batch, int local_heads, int total_heads) {
  Replica r;
  r.device = device;
  r.shard = shard;
  CacheDesc desc;
  desc.format = format;
  desc.block_size = block_size;
  desc.num_blocks = std::max<int64_t>(paging.num_blocks, 1);
  // Zero-filled: never-written slots read as zeros rather than garbage, should anything look.
  r.cache = DeviceCache(device, desc, fp8_scale);
  r.block_table = DeviceBuffer::from(device, paging.table);
  r.seq_lens = DeviceBuffer(device, sizeof(int32_t) * static_cast<std::size_t>(batch));
  const std::size_t staging = static_cast<std::size_t>(std::max<int64_t>(kPrefillChunk, batch));
  r.rows = DeviceBuffer(device, staging * kHeadDim * 2);
  r.positions = DeviceBuffer(device, staging * sizeof(int64_t));
  r.token_to_req = DeviceBuffer(device, staging * sizeof(int32_t));
  r.slots = DeviceBuffer(device, staging * sizeof(int64_t));
  // The full query (all heads) is uploaded; a rank reads its own heads through a strided view.
  r.q = DeviceBuffer(device, static_cast<std::size_t>(batch) * total_heads * kHeadDim * 2);
  r.out = DeviceBuffer(device, static_cast<std::size_t>(batch) * local_heads * kLatentDim * 2);
  r.lse = DeviceBuffer(device, static_cast<std::size_t>(batch) * local_heads * sizeof(float));
  // A DCP rank's workspace comes from its communicator (run_demo, once the group exists).
  if (shard.world == 1) r.workspace = DeviceBuffer(device, mla_decode_workspace_size(batch, 1, local_heads, device));
  return r;
}

/// Writes `count` tokens (rows packed [count, 576] bf16 on the host) at the given positions of
/// the given requests into the replica's cache, through the DCP slot mapping.
void write_tokens(Replica& r, const uint16_t* rows, const int64_t* positions, const int32_t* reqs, int64_t count,
                  int64_t max_blocks, int batch) {
  const auto n = static_cast<std::size_t>(count);
  r.rows.upload(rows, n * kHeadDim * 2);
  r.positions.upload(positions, n * sizeof(int64_t));
  r.token_to_req.upload(reqs, n * sizeof(int32_t));
  const Tensor pos(r.positions.data(), DType::i64, {count}, r.device);
  const Tensor req(r.token_to_req.data(), DType::i32, {count}, r.device);
  const Tensor slots(r.slots.data(), DType::i64, {count}, r.device);
  const Tensor table(r.block_table.data(), DType::i32, {batch, max_blocks}, r.device);
  dcp::slot_mapping(pos, req, table, r.cache.desc.block_size, r.shard, slots);
  // The latent and rope halves are views of the same 576-wide rows, as an engine's kv_a
  // projection output is split: row stride 576, widths 512 and 64.
  auto* base = static_cast<uint16_t*>(r.rows.data());
  const Tensor kv_c(base, DType::bf16, {count, kLatentDim}, {kHeadDim, 1}, r.device);
  const Tensor k_pe(base + kLatentDim, DType::bf16, {count, kRopeDim}, {kHeadDim, 1}, r.device);
  write_cache(kv_c, k_pe, slots, r.cache.view());
}

/// Runs one decode over `heads` query heads starting at head `first_head` of the uploaded query.
/// With comm (world > 1) it is the DCP step; otherwise the plain single-rank op.
void decode(Replica& r, Communicator* comm, int batch, int total_heads, int first_head, int heads,
            int64_t max_blocks, dcp::Merge merge) {
  auto* qbase = static_cast<uint16_t*>(r.q.data()) + static_cast<int64_t>(first_head) * kHeadDim;
  const int64_t hs = static_cast<int64_t>(total_heads) * kHeadDim;
  const Tensor q(qbase, DType::bf16, {batch, 1, heads, kHeadDim}, {hs, hs, kHeadDim, 1}, r.device);
  const Tensor out(r.out.data(), DType::bf16, {batch, 1, heads, kLatentDim}, r.device);
  const Tensor lse(r.lse.data(), DType::f32, {batch, 1, heads}, r.device);
  const Tensor table(r.block_table.data(), DType::i32, {batch, max_blocks}, r.device);
  const Tensor lens(r.seq_lens.data(), DType::i32, {batch}, r.device);
  const Workspace ws = r.comm_workspace ? Workspace{r.comm_workspace->data(), r.comm_workspace->bytes()}
                                        : Workspace{r.workspace.data(), r.workspace.bytes()};
  if (comm) {
    dcp::DecodeOptions o;
    o.softmax_scale = kSoftmaxScale;
    o.interleave = r.shard.interleave;
    o.merge = merge;
    dcp::decode(*comm, q, r.cache.view(), table, lens, out, lse, o, ws);
  } else {
    DecodeParams p;
    p.softmax_scale = kSoftmaxScale;
    mla_decode(q, r.cache.view(), table, lens, out, lse, p, ws);
  }
}

/// The communicators of a DCP group: the in-process CPU group, or NCCL over GPUs base..base+W-1.
std::vector<std::unique_ptr<Communicator>> make_group(Device base, int world) {
  if (base.is_cpu()) return make_cpu_group(world);
  std::vector<int> devices(static_cast<std::size_t>(world));
  std::iota(devices.begin(), devices.end(), base.index);
  return make_nccl_group(devices);
}

struct Result {
  std::vector<double> out;  // [batch, heads, 512], heads in global order
  std::vector<double> lse;  // [batch, heads]
};

/// Gathers per-rank (out, lse) of local heads into one [batch, heads] picture.
Result collect(const std::vector<Replica*>& ranks, int batch, int local_heads) {
  const int world = static_cast<int>(ranks.size());
  const int heads = world * local_heads;
  Result res;
  res.out.resize(static_cast<std::size_t>(batch) * heads * kLatentDim);
  res.lse.resize(static_cast<std::size_t>(batch) * heads);
  for (int r = 0; r < world; ++r) {
    synchronize(ranks[r]->device);
    const auto o = ranks[r]->out.to_host<uint16_t>();
    const auto l = ranks[r]->lse.to_host<float>();
    for (int b = 0; b < batch; ++b)
      for (int h = 0; h < local_heads; ++h) {
        const std::size_t src = static_cast<std::size_t>(b) * local_heads + h;
        const std::size_t dst = static_cast<std::size_t>(b) * heads + static_cast<std::size_t>(r) * local_heads + h;
        res.lse[dst] = l[src];
        for (int i = 0; i < kLatentDim; ++i) res.out[dst * kLatentDim + i] = num::bf16_to_f32(o[src * kLatentDim + i]);
      }
  }
  return res;
}

struct Err {
  double out = 0, lse = 0;
  void max_with(const Err& e) {
    out = std::max(out, e.out);
    lse = std::max(lse, e.lse);
  }
};
Err compare(const Result& x, const Result& ref) { return {rel_err(x.out, ref.out), max_abs_err(x.lse, ref.lse)}; }

void validate(DemoOptions& o, Device device, CacheFormat& format, std::vector<int>& lens) {
  auto need = [](bool ok, const std::string& msg) {
    if (!ok) throw UsageError(msg);
  };
  const auto f = parse_format(o.kv_cache_dtype);
  need(f.has_value(), "--kv-cache-dtype " + o.kv_cache_dtype + ": expected bf16, fp8 or fp8_ds_mla");
  need(*f != CacheFormat::dsv4, "--kv-cache-dtype dsv4: the demo decodes DeepSeek-V3 MLA (576-wide rows); dsv4 "
                                "caches are gathered, not decoded here; expected bf16, fp8 or fp8_ds_mla");
  format = *f;
  need(o.heads >= 1, "--heads " + std::to_string(o.heads) + ": expected >= 1");
  need(o.batch >= 1, "--batch " + std::to_string(o.batch) + ": expected >= 1");
  need(o.steps >= 1, "--steps " + std::to_string(o.steps) + ": expected >= 1");
  need(o.block_size >= 1, "--block-size " + std::to_string(o.block_size) + ": expected >= 1");
  need(o.interleave >= 1, "--interleave " + std::to_string(o.interleave) + ": expected >= 1");
  need(o.block_size % o.interleave == 0, "--interleave " + std::to_string(o.interleave) +
                                             ": expected a divisor of --block-size " + std::to_string(o.block_size));
  need(o.merge == "a2a" || o.merge == "agrs", "--merge " + o.merge + ": expected a2a or agrs");
  lens = parse_int_list(o.context_lens, "--context-lens");
  if (o.dcp == 0) o.dcp = device.is_cpu() ? 2 : std::max(1, cuda_device_count());
  need(o.dcp >= 1, "--dcp " + std::to_string(o.dcp) + ": expected >= 1");
  need(o.heads % o.dcp == 0, "--heads " + std::to_string(o.heads) + ": expected a multiple of --dcp " +
                                 std::to_string(o.dcp) + " (each rank holds heads / dcp query heads)");
  if (device.is_cuda() && o.dcp > 1)
    need(device.index + o.dcp <= cuda_device_count(),
         "--dcp " + std::to_string(o.dcp) + ": one GPU per rank, but only " + std::to_string(cuda_device_count()) +
             " CUDA device(s) from " + device.str() + " on");
}

int run_demo(DemoOptions o) {
  const Device device = resolve_device(o.device);
  CacheFormat format{};
  std::vector<int> ctx_list;
  validate(o, device, format, ctx_list);
  const int W = o.dcp, I = o.interleave, H = o.heads, N = H / W, B = o.batch, S = o.steps;
  const dcp::Merge merge = o.merge == "a2a" ? dcp::Merge::all_to_all : dcp::Merge::allgather_reduce_scatter;

  std::vector<int64_t> start_len(B), final_len(B);
  for (int b = 0; b < B; ++b) {
    start_len[b] = ctx_list[static_cast<std::size_t>(b) % ctx_list.size()];
    final_len[b] = start_len[b] + S;
  }
  const int64_t start_tokens = std::accumulate(start_len.begin(), start_len.end(), int64_t{0});
  const int64_t final_tokens = start_tokens + static_cast<int64_t>(B) * S;

  // Every latent row up front, N(0,1) rounded to bf16 (what a model's kv_a projection emits).
  std::mt19937_64 rng(o.seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  // rows[b]: request b's tokens at positions [0, final_len[b]), 576 bf16 each.
  std::vector<std::vector<uint16_t>> rows(static_cast<std::size_t>(B));
  float amax = 0.0f;
  for (int b = 0; b < B; ++b) {
    auto& v = rows[static_cast<std::size_t>(b)];
    v.resize(static_cast<std::size_t>(final_len[b]) * kHeadDim);
    for (std::size_t i = 0; i < v.size(); ++i) {
      v[i] = num::f32_to_bf16(normal(rng));
      if (i < static_cast<std::size_t>(start_len[b]) * kHeadDim) amax = std::max(amax, std::fabs(num::bf16_to_f32(v[i])));
    }
  }
  // A per-tensor fp8 scale calibrated on the prompt, as an engine computes it on its first batch;
  // later tokens beyond it saturate to ±448·scale.
  const float fp8_scale = amax / 448.0f;

  const Paging shard_paging = make_paging(final_len, W, I, o.block_size, rng);
  const Paging full_paging = make_paging(final_len, 1, 1, o.block_size, rng);

  std::vector<Replica> ranks;
  for (int r = 0; r < W; ++r) {
    const Device d = device.is_cpu() ? device : Device::cuda(device.index + r);
    ranks.push_back(make_replica(d, DcpShard{W, r, I}, format, o.block_size, shard_paging, fp8_scale, B, N, H));
  }
  // The reference (bf16, one rank, all heads) and, under DCP, the chosen format on one rank, which
  // splits the error into the format's share and the sharding's.
  Replica ref = make_replica(device, DcpShard{}, CacheFormat::bf16, o.block_size, full_paging, fp8_scale, B, H, H);
  std::optional<Replica> single;
  if (W > 1) single = make_replica(device, DcpShard{}, format, o.block_size, full_paging, fp8_scale, B, H, H);
  auto group = W > 1 ? make_group(device, W) : std::vector<std::unique_ptr<Communicator>>{};
  if (W > 1)  // a collective call: every rank on its own thread
    run_ranks(W, [&](int r) {
      Replica& rk = ranks[static_cast<std::size_t>(r)];
      rk.comm_workspace = group[static_cast<std::size_t>(r)]->allocate(dcp::decode_workspace_size(B, 1, N, W, rk.device));
    });

  std::cout << "mlakv demo: MLA decode on a DeepSeek-V3-shaped layer (latent " << kLatentDim << " + rope " << kRopeDim
            << ", " << H << " query heads, softmax scale 1/sqrt(192))\n"
            << "  device " << device.str();
  if (W > 1)
    std::cout << (device.is_cuda() ? " (one GPU per rank)" : "") << "; DCP " << W << " ranks x " << N
              << " heads, interleave " << I << ", "
              << (merge == dcp::Merge::all_to_all ? "all-to-all" : "all-gather + reduce-scatter") << " merge\n";
  else
    std::cout << "; one rank (no DCP)\n";
  std::cout
            << "  kv cache " << format_name(format) << ", block size " << o.block_size;
  if (format == CacheFormat::fp8) std::cout << ", per-tensor scale " << sci(fp8_scale) << " (calibrated on the prompts)";
  std::cout << "\n  batch " << B << ", context lengths " << o.context_lens << " (cycled over the batch), " << S
            << " decode steps, seed " << o.seed << "\n\n";

  // Prefill is cheap next to the decodes: a tenth of the bar, the steps share the rest.
  constexpr int64_t kPrefillUnits = 10;
  ProgressBar progress("demo", kPrefillUnits + static_cast<int64_t>(S) * 2);

  // Prefill: every rank sees every prompt token and keeps the ones the slot mapping gives it.
  const auto prefill_t0 = std::chrono::steady_clock::now();
  {
    std::vector<int64_t> pos(static_cast<std::size_t>(kPrefillChunk));
    std::vector<int32_t> req(static_cast<std::size_t>(kPrefillChunk));
    int64_t written = 0;
    for (int b = 0; b < B; ++b) {
      for (int64_t p0 = 0; p0 < start_len[b]; p0 += kPrefillChunk) {
        const int64_t n = std::min(kPrefillChunk, start_len[b] - p0);
        for (int64_t i = 0; i < n; ++i) {
          pos[static_cast<std::size_t>(i)] = p0 + i;
          req[static_cast<std::size_t>(i)] = b;
        }
        const uint16_t* chunk = rows[static_cast<std::size_t>(b)].data() + p0 * kHeadDim;
        run_ranks(W, [&](int r) {
          write_tokens(ranks[static_cast<std::size_t>(r)], chunk, pos.data(), req.data(), n, shard_paging.max_blocks, B);
        });
        write_tokens(ref, chunk, pos.data(), req.data(), n, full_paging.max_blocks, B);
        if (single) write_tokens(*single, chunk, pos.data(), req.data(), n, full_paging.max_blocks, B);
        written += n;
        progress.update(kPrefillUnits * written / std::max<int64_t>(start_tokens, 1));
      }
    }
    for (auto& r : ranks) synchronize(r.device);
  }
  const double prefill_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - prefill_t0).count();

  std::vector<Replica*> rank_ptrs;
  for (auto& r : ranks) rank_ptrs.push_back(&r);
  std::vector<double> step_s;
  Err vs_ref_max, fmt_only, dcp_only;
  std::vector<int32_t> lens(static_cast<std::size_t>(B));
  std::vector<int64_t> pos(static_cast<std::size_t>(B));
  std::vector<int32_t> req(static_cast<std::size_t>(B));
  std::vector<uint16_t> new_rows(static_cast<std::size_t>(B) * kHeadDim);
  std::vector<uint16_t> q_host(static_cast<std::size_t>(B) * H * kHeadDim);

  for (int s = 0; s < S; ++s) {
    for (int b = 0; b < B; ++b) {
      const int64_t p = start_len[b] + s;
      pos[static_cast<std::size_t>(b)] = p;
      req[static_cast<std::size_t>(b)] = b;
      lens[static_cast<std::size_t>(b)] = static_cast<int32_t>(p + 1);
      std::copy_n(rows[static_cast<std::size_t>(b)].data() + p * kHeadDim, kHeadDim,
                  new_rows.data() + static_cast<std::size_t>(b) * kHeadDim);
    }
    for (auto& x : q_host) x = num::f32_to_bf16(normal(rng));

    // The timed step: what each rank does per layer per decode step.
    const auto t0 = std::chrono::steady_clock::now();
    run_ranks(W, [&](int r) {
      Replica& rk = ranks[static_cast<std::size_t>(r)];
      rk.seq_lens.upload(lens.data(), lens.size() * sizeof(int32_t));
      rk.q.upload(q_host.data(), q_host.size() * 2);
      write_tokens(rk, new_rows.data(), pos.data(), req.data(), B, shard_paging.max_blocks, B);
      decode(rk, W > 1 ? group[static_cast<std::size_t>(r)].get() : nullptr, B, H, r * N, N, shard_paging.max_blocks,
             merge);
      synchronize(rk.device);
    });
    step_s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    progress.update(kPrefillUnits + 2 * s + 1);

    for (Replica* r : {&ref, single ? &*single : nullptr}) {
      if (!r) continue;
      r->seq_lens.upload(lens.data(), lens.size() * sizeof(int32_t));
      r->q.upload(q_host.data(), q_host.size() * 2);
      write_tokens(*r, new_rows.data(), pos.data(), req.data(), B, full_paging.max_blocks, B);
    }
    decode(ref, nullptr, B, H, 0, H, full_paging.max_blocks, merge);
    const Result want = collect({&ref}, B, H);
    const Result got = collect(rank_ptrs, B, N);
    vs_ref_max.max_with(compare(got, want));
    // The single-rank run in the chosen format costs a full extra decode; once, on the last step,
    // is enough to tell the format's error from the sharding's.
    if (single && s == S - 1) {
      decode(*single, nullptr, B, H, 0, H, full_paging.max_blocks, merge);
      const Result one = collect({&*single}, B, H);
      fmt_only = compare(one, want);
      dcp_only = compare(got, one);
    }
    progress.update(kPrefillUnits + 2 * s + 2);
  }
  progress.finish();

  // ---- report -------------------------------------------------------------------------------
  // Bytes of tokens held at the end by the fullest rank (rank 0), for the format and bf16.
  auto held = [&](int world) {
    int64_t t = 0;
    for (int b = 0; b < B; ++b) t += dcp::local_length(final_len[b], 0, world, I);
    return t;
  };
  CacheDesc bf16_desc;
  bf16_desc.format = CacheFormat::bf16;
  CacheDesc fmt_desc;
  fmt_desc.format = format;
  std::cout << "KV cache per rank (fullest rank; " << final_tokens << " tokens in all at the end)\n";
  std::vector<std::string> header{"format", "bytes/token", "W=1"};
  if (W > 1) header.push_back("W=" + std::to_string(W));
  header.push_back("saving vs bf16 W=1");
  Table kv(header);
  for (const CacheDesc* d : {&bf16_desc, &fmt_desc}) {
    if (d == &fmt_desc && format == CacheFormat::bf16) break;
    const double one = static_cast<double>(held(1) * d->token_bytes());
    const double w = static_cast<double>(held(W) * d->token_bytes());
    char ratio[32];
    std::snprintf(ratio, sizeof ratio, "%.2fx",
                  static_cast<double>(held(1) * bf16_desc.token_bytes()) / std::max(w, 1.0));
    std::vector<std::string> cells{format_name(d->format), std::to_string(d->token_bytes()), format_bytes(one)};
    if (W > 1) cells.push_back(format_bytes(w));
    cells.push_back(ratio);
    kv.add(cells);
  }
  kv.print(std::cout);

  const Budget fb = format_budget(format);
  const std::string fmt = format_name(format);
  std::cout << "\nAccuracy against the bf16 single-rank reference (out: relative Frobenius error; lse: max abs error;\n"
               "budgets from SPEC section 6)\n";
  Table acc({"comparison", "out rel err", "lse max err", "budget (out / lse)", "verdict"});
  // The sharding must reproduce one rank to within rounding: over its budget is a bug. The
  // quantization error is a property of the format on this data, and sits near its budget for
  // fp8_ds_mla, so it is reported against the budget; only far beyond it (a broken path rather
  // than rounding noise) or non-finite does it fail the run.
  bool ok = true;
  enum class Gate { strict, loose };
  auto row = [&](const std::string& what, const Err& e, Budget b, Gate gate) {
    const bool within = e.out <= b.out && e.lse <= b.lse;
    const double slack = gate == Gate::strict ? 1.0 : 2.0;
    if (!(e.out <= slack * b.out && e.lse <= slack * b.lse)) ok = false;  // NaN fails too
    acc.add({what, sci(e.out), sci(e.lse), sci(b.out) + " / " + (std::isinf(b.lse) ? std::string("-") : sci(b.lse)),
             within ? "within" : (gate == Gate::strict ? "OVER" : "above")});
  };
  const std::string steps = ", worst of " + std::to_string(S) + " steps";
  if (W > 1) {
    // The end-to-end figure's budget: the format's plus the sharding's.
    const Budget total{fb.out + kDcpBudget.out, fb.lse + kDcpBudget.lse};
    row(fmt + " + DCP W=" + std::to_string(W) + steps, vs_ref_max, total, Gate::loose);
    row("  format alone: " + fmt + " W=1 vs bf16 W=1", fmt_only, fb, Gate::loose);
    row("  DCP alone: " + fmt + " W=" + std::to_string(W) + " vs " + fmt + " W=1", dcp_only, kDcpBudget, Gate::strict);
  } else {
    row(fmt + " W=1 vs bf16 W=1" + steps, vs_ref_max, fb, Gate::loose);
  }
  acc.print(std::cout);

  std::vector<double> sorted = step_s;
  std::sort(sorted.begin(), sorted.end());
  const double median = sorted[sorted.size() / 2];
  std::cout << "\nTime per decode step (slot mapping + cache write + " << (W > 1 ? "DCP decode" : "decode") << ", "
            << B << " tokens, " << W << " rank" << (W > 1 ? "s" : "") << "): median " << format_seconds(median)
            << ", min " << format_seconds(sorted.front()) << ", max " << format_seconds(sorted.back())
            << "\nPrefill write of " << start_tokens << " tokens: " << format_seconds(prefill_s)
            << "\n(wall time with host copies and synchronization; `mlakv bench` times the kernels)\n";
  if (!ok) {
    std::cout << "\nFAIL: DCP over its budget, or an error far over the format's budget (a broken path)\n";
    return 1;
  }
  return 0;
}

}  // namespace

CommandFn add_demo_command(CLI::App& root) {
  auto o = std::make_shared<DemoOptions>();
  CLI::App* app = root.add_subcommand(
      "demo", "Decode on a DeepSeek-V3-shaped MLA layer with an FP8 / DCP-sharded KV cache, checked against bf16");
  app->add_option("--device", o->device, "cpu, cuda, cuda:N or auto")->capture_default_str();
  app->add_option("--heads", o->heads, "query heads in all (split over the DCP ranks)")->capture_default_str();
  app->add_option("--batch", o->batch, "requests decoded together")->capture_default_str();
  app->add_option("--context-lens", o->context_lens, "prompt lengths, comma-separated, cycled over the batch")
      ->capture_default_str();
  app->add_option("--kv-cache-dtype", o->kv_cache_dtype, "bf16, fp8 or fp8_ds_mla")->capture_default_str();
  app->add_option("--dcp", o->dcp, "DCP ranks (default: every GPU on cuda, 2 on cpu)");
  app->add_option("--interleave", o->interleave, "DCP interleave: consecutive tokens per rank")->capture_default_str();
  app->add_option("--block-size", o->block_size, "tokens per cache block")->capture_default_str();
  app->add_option("--steps", o->steps, "decode steps (one new token per request each)")->capture_default_str();
  app->add_option("--merge", o->merge, "DCP merge: a2a (all-to-all) or agrs (all-gather + reduce-scatter)")
      ->capture_default_str();
  app->add_option("--seed", o->seed, "random seed")->capture_default_str();
  return [o, app] {
    DemoOptions opts = *o;
    // 0 is the "not given" marker; a user who asks for 0 ranks must hear about it.
    if (app->count("--dcp") && opts.dcp < 1) throw UsageError("--dcp " + std::to_string(opts.dcp) + ": expected >= 1");
    return run_demo(opts);
  };
}

}  // namespace mlakv::cli
