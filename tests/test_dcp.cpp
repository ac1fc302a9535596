// Decode context parallelism on CPU ranks (SPEC §4): the sharding identities, the slot mapping,
// dcp::decode against a single-rank decode of the same tokens, and dcp::gather_context against
// the single-rank gathers. Every rank's cache is written through dcp::slot_mapping.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>

#include "attention_test_util.hpp"
#include "comm/cpu_group.hpp"

namespace mlakv::test {
namespace {

using namespace attn;

// ---- sharding ------------------------------------------------------------------------------------

TEST(DcpShardMath, OwnerLocalIndexAndLengthAgree) {
  for (int W : {1, 2, 3, 4, 5, 8})
    for (int I : {1, 2, 16, 64}) {
      std::vector<int64_t> next(static_cast<std::size_t>(W), 0);  // local indices handed out so far
      for (int64_t t = 0; t < 3 * 64 * 8 + 7; ++t) {
        const int r = dcp::owner(t, W, I);
        const int64_t j = dcp::local_index(t, W, I);
        ASSERT_EQ(j, next[static_cast<std::size_t>(r)]) << "W " << W << " I " << I << " t " << t;
        ASSERT_EQ(dcp::global_position(j, r, W, I), t);
        ++next[static_cast<std::size_t>(r)];
        int64_t sum = 0;
        for (int q = 0; q < W; ++q) {
          ASSERT_EQ(dcp::local_length(t + 1, q, W, I), next[static_cast<std::size_t>(q)]) << "L " << t + 1;
          sum += dcp::local_length(t + 1, q, W, I);
        }
        ASSERT_EQ(sum, t + 1);
      }
      for (int r = 1; r < W; ++r) EXPECT_EQ(dcp::local_length(r * I, r, W, I), 0) << "L <= r*I leaves rank r empty";
    }
}

TEST(DcpShardMath, CheckShardRejects) {
  EXPECT_NO_THROW(dcp::check_shard({3, 2, 16}, 64));
  const std::pair<DcpShard, const char*> bad[] = {{{0, 0, 1}, "shard.world"},      {{2, 2, 1}, "shard.rank"},
                                                  {{2, -1, 1}, "shard.rank"},     {{2, 0, 0}, "shard.interleave"},
                                                  {{2, 0, 48}, "shard.interleave"}};
  for (const auto& [shard, name] : bad) {
    try {
      dcp::check_shard(shard, 64);
      ADD_FAILURE() << "accepted " << name;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  }
}

TEST(DcpSlotMapping, EveryTokenOnExactlyOneRankInItsSlot) {
  const int W = 3, I = 4, bs = 8;
  Requests req({0, 1, 11, 12, 50});
  BlockTable bt(blocks_needed(req, bs, W, I));
  std::vector<int> hits(static_cast<std::size_t>(req.tokens), 0);
  for (int r = 0; r < W; ++r) {
    const std::vector<int64_t> slots = dcp_slots(req, bt, bs, {W, r, I});
    for (int64_t t = 0; t < req.tokens; ++t) {
      const int64_t pos = req.positions[static_cast<std::size_t>(t)], b = req.token_to_req[static_cast<std::size_t>(t)];
      if (dcp::owner(pos, W, I) != r) {
        EXPECT_EQ(slots[static_cast<std::size_t>(t)], -1);
        continue;
      }
      ++hits[static_cast<std::size_t>(t)];
      const int64_t j = dcp::local_index(pos, W, I);
      EXPECT_EQ(slots[static_cast<std::size_t>(t)], static_cast<int64_t>(bt.at(b, j / bs)) * bs + j % bs);
    }
  }
  for (int h : hits) EXPECT_EQ(h, 1);
}

TEST(DcpSlotMapping, PaddingAndBadRequestIds) {
  BlockTable bt({2});
  std::vector<int64_t> pos{0, -1, 5}, slots(3, 99);
  std::vector<int32_t> req{0, 0, -1};
  dcp::slot_mapping(Tensor(pos.data(), DType::i64, {3}), Tensor(req.data(), DType::i32, {3}), bt.tensor, 4, {1, 0, 1},
                    Tensor(slots.data(), DType::i64, {3}));
  EXPECT_EQ(slots, (std::vector<int64_t>{static_cast<int64_t>(bt.at(0, 0)) * 4, -1, -1}));
  req[0] = 1;  // block_table has one row
  EXPECT_THROW(dcp::slot_mapping(Tensor(pos.data(), DType::i64, {3}), Tensor(req.data(), DType::i32, {3}), bt.tensor,
                                 4, {1, 0, 1}, Tensor(slots.data(), DType::i64, {3})),
               Error);
}

// ---- decode --------------------------------------------------------------------------------------

struct Scenario {
  const char* name;
  int world, interleave, block_size;
  std::vector<int32_t> lens;
  int s_q = 1;
  bool causal = true;
  int local_heads = 2;
  DType out_dtype = DType::bf16;
};

// Sizes stay small: every scenario runs 6 merge / quantization variants for 3 formats.
const Scenario kScenarios[] = {
    {"W1_I1_bs16", 1, 1, 16, {0, 1, 37}},
    {"W2_I1_bs16", 2, 1, 16, {0, 1, 2, 45}},
    {"W3_I16_bs16_sq2", 3, 16, 16, {1, 16, 17, 33, 100}, 2},
    {"W4_I64_bs64", 4, 64, 64, {5, 64, 130, 300}, 1, true, 1},
    {"W8_I1_bs1_sq4", 8, 1, 1, {3, 8, 29}, 4, true, 1},
    {"W2_I16_bs64_sq3", 2, 16, 64, {31, 32, 33, 90}, 3},
    {"W3_I1_bs64_noncausal", 3, 1, 64, {0, 70}, 2, false},
    {"W4_I16_bs16_all_empty", 4, 16, 16, {0, 0}, 2},
    {"W8_I16_bs64_f32", 8, 16, 64, {130, 200}, 1, true, 1, DType::f32},
    {"W3_I16_bs16_f32_sq2", 3, 16, 16, {1, 47, 48, 49}, 2, true, 2, DType::f32},
};

struct DcpRun {
  std::vector<float> ref_out, ref_lse;             // single rank, f32, [B, s_q, W·N, ...]
  std::vector<std::vector<uint8_t>> out;           // per rank [B, s_q, N, 512] (bf16 or f32)
  std::vector<std::vector<float>> lse;             // per rank [B, s_q, N]
};

// The decode state of one scenario: the same tokens in one single-rank cache and W rank caches.
struct DcpFixture {
  const Scenario& sc;
  CacheFormat format;
  Requests req;
  BlockTable bt_single, bt_dcp;
  OwnedCache single;
  std::vector<std::unique_ptr<OwnedCache>> ranks;
  std::vector<uint16_t> q;  // [B, s_q, W·N, 576]
  std::vector<int32_t> lens;
  float q_scale = 0.01f;

  static std::vector<int64_t> single_need(const Scenario& s) {
    std::vector<int64_t> n;
    for (int32_t L : s.lens) n.push_back(ceil_div(L, s.block_size));
    return n;
  }

  DcpFixture(const Scenario& s, CacheFormat f)
      : sc(s),
        format(f),
        req(s.lens),
        bt_single(single_need(s)),
        bt_dcp(blocks_needed(req, s.block_size, s.world, s.interleave)),
        single(f, bt_single.num_blocks, s.block_size, 0.013f),
        lens(s.lens) {
    auto slots = plain_slots(req, bt_single, s.block_size);
    write_tokens(req, single.cache, slots);
    for (int r = 0; r < s.world; ++r) {
      ranks.push_back(std::make_unique<OwnedCache>(f, bt_dcp.num_blocks, s.block_size, 0.013f, 0x5A));
      auto rs = dcp_slots(req, bt_dcp, s.block_size, {s.world, r, s.interleave});
      write_tokens(req, ranks.back()->cache, rs);
    }
    q = random_bf16(static_cast<std::size_t>(req.batch()) * s.s_q * s.world * s.local_heads * kHeadDim);
  }

  int64_t heads_total() const { return static_cast<int64_t>(sc.world) * sc.local_heads; }

  void reference(bool quant, std::vector<float>& out, std::vector<float>& lse) {
    const int64_t B = req.batch(), S = sc.s_q, H = heads_total();
    std::vector<uint8_t> q8(q.size());
    for (std::size_t i = 0; i < q.size(); ++i) q8[i] = num::f32_to_e4m3(num::bf16_to_f32(q[i]) / q_scale);
    out.assign(static_cast<std::size_t>(B * S * H * kLatentDim), 0);
    lse.assign(static_cast<std::size_t>(B * S * H), 0);
    DecodeParams p;
    p.softmax_scale = 0.0625f;
    p.causal = sc.causal;
    p.q_scale = quant ? &q_scale : nullptr;
    mla_decode(quant ? Tensor(q8.data(), DType::e4m3, {B, S, H, kHeadDim}) : Tensor(q.data(), DType::bf16, {B, S, H, kHeadDim}),
               single.cache, bt_single.tensor, Tensor(lens.data(), DType::i32, {B}),
               Tensor(out.data(), DType::f32, {B, S, H, kLatentDim}), Tensor(lse.data(), DType::f32, {B, S, H}), p);
  }

  DcpRun run(dcp::Merge merge, dcp::QueryQuant qq) {
    const int W = sc.world, N = sc.local_heads;
    const int64_t B = req.batch(), S = sc.s_q, H = heads_total();
    DcpRun res;
    reference(qq != dcp::QueryQuant::none, res.ref_out, res.ref_lse);
    res.out.resize(static_cast<std::size_t>(W));
    res.lse.resize(static_cast<std::size_t>(W));
    auto comms = make_cpu_group(W);
    run_ranks(W, [&](int r) {
      auto& out = res.out[static_cast<std::size_t>(r)];
      auto& lse = res.lse[static_cast<std::size_t>(r)];
      out.assign(static_cast<std::size_t>(B * S * N * kLatentDim) * dtype_size(sc.out_dtype), 0xEE);
      lse.assign(static_cast<std::size_t>(B * S * N), 77.0f);
      // This rank's heads as a strided view of the full query tensor.
      const Tensor q_local(q.data() + static_cast<std::size_t>(r) * N * kHeadDim, DType::bf16, {B, S, N, kHeadDim},
                           {S * H * kHeadDim, H * kHeadDim, kHeadDim, 1});
      std::vector<uint8_t> ws(dcp::decode_workspace_size(static_cast<int>(B), static_cast<int>(S), N, W, Device::cpu()));
      dcp::DecodeOptions o;
      o.softmax_scale = 0.0625f;
      o.causal = sc.causal;
      o.interleave = sc.interleave;
      o.merge = merge;
      o.q_quant = qq;
      o.q_scale = &q_scale;
      dcp::decode(*comms[static_cast<std::size_t>(r)], q_local, ranks[static_cast<std::size_t>(r)]->cache,
                  bt_dcp.tensor, Tensor(lens.data(), DType::i32, {B}),
                  Tensor(out.data(), sc.out_dtype, {B, S, N, kLatentDim}), Tensor(lse.data(), DType::f32, {B, S, N}), o,
                  {ws.data(), ws.size()});
    });
    return res;
  }
};

// Worst deviation of the DCP result from the single-rank one, in the unit the output type
// allows: an f32 result is the same attention merged in fp32 partials (a few f32 roundings of
// the row's magnitude); a bf16 result is that value rounded once more.
struct Deviation {
  double excess = 0;  // |dcp - ref| beyond what the bound allows, in units of the row's max |ref|
  double lse = 0;
  bool empty_ok = true;
};

Deviation compare(const DcpFixture& f, const DcpRun& run, double f32_rel) {
  const int W = f.sc.world, N = f.sc.local_heads;
  const int64_t T = static_cast<int64_t>(f.req.batch()) * f.sc.s_q, H = f.heads_total();
  Deviation d;
  for (int r = 0; r < W; ++r)
    for (int64_t t = 0; t < T; ++t)
      for (int n = 0; n < N; ++n) {
        const std::size_t ref_row = static_cast<std::size_t>(t * H + static_cast<int64_t>(r) * N + n);
        const std::size_t row = static_cast<std::size_t>(t * N + n);
        const float* ref = run.ref_out.data() + ref_row * kLatentDim;
        const float ref_lse = run.ref_lse[ref_row], lse = run.lse[static_cast<std::size_t>(r)][row];
        if (std::isinf(ref_lse)) {
          d.empty_ok &= lse == -INFINITY;
        } else {
          d.lse = std::max(d.lse, static_cast<double>(std::fabs(lse - ref_lse)));
        }
        double row_max = 0;
        for (int i = 0; i < kLatentDim; ++i) row_max = std::max(row_max, static_cast<double>(std::fabs(ref[i])));
        const uint8_t* o = run.out[static_cast<std::size_t>(r)].data() + row * kLatentDim * dtype_size(f.sc.out_dtype);
        for (int i = 0; i < kLatentDim; ++i) {
          double got, allowed = f32_rel * row_max;
          if (f.sc.out_dtype == DType::f32) {
            got = reinterpret_cast<const float*>(o)[i];
          } else {
            const uint16_t b = reinterpret_cast<const uint16_t*>(o)[i];
            got = num::bf16_to_f32(b);
            allowed += ref[i] == 0 ? 0.0 : 0.5 * bf16_spacing(ref[i]);
          }
          if (std::isnan(got)) return {INFINITY, INFINITY, false};
          const double ex = std::fabs(got - ref[i]) - allowed;
          if (ex > 0) d.excess = std::max(d.excess, ex / std::max(row_max, 1e-30));
          if (std::isinf(ref_lse)) d.empty_ok &= got == 0;
        }
      }
  return d;
}

class DcpDecode : public ::testing::TestWithParam<std::tuple<CacheFormat, int>> {};

TEST_P(DcpDecode, EqualsSingleRank) {
  const auto [format, idx] = GetParam();
  const Scenario& sc = kScenarios[idx];
  DcpFixture f(sc, format);
  for (auto merge : {dcp::Merge::allgather_reduce_scatter, dcp::Merge::all_to_all})
    for (auto qq : {dcp::QueryQuant::none, dcp::QueryQuant::e4m3_after_gather, dcp::QueryQuant::e4m3_before_gather}) {
      SCOPED_TRACE("merge " + std::to_string(static_cast<int>(merge)) + " q_quant " +
                   std::to_string(static_cast<int>(qq)));
      const DcpRun run = f.run(merge, qq);
      // The partials are f32 and the merge adds a couple of f32 roundings relative to the row.
      const Deviation d = compare(f, run, 5e-7);
      EXPECT_EQ(d.excess, 0.0) << "beyond 5e-7 of the row (plus half a bf16 ulp for bf16 outputs)";
      EXPECT_LE(d.lse, 1e-6);
      EXPECT_TRUE(d.empty_ok) << "an empty request must give out = 0, lse = -inf";
    }
}

INSTANTIATE_TEST_SUITE_P(
    Cpu, DcpDecode,
    ::testing::Combine(::testing::Values(CacheFormat::bf16, CacheFormat::fp8, CacheFormat::fp8_ds_mla),
                       ::testing::Range(0, static_cast<int>(std::size(kScenarios)))),
    [](const auto& info) {
      return std::string(format_name(std::get<0>(info.param))) + "_" + kScenarios[std::get<1>(info.param)].name;
    });

// One token in the whole context: three of four ranks hold empty shards, and the merged
// attention is that token's latent exactly.
TEST(DcpDecodeEdge, EmptyShardsAreFiniteAndExact) {
  const Scenario sc{"one_token", 4, 16, 16, {1}, 1, true, 2, DType::f32};
  DcpFixture f(sc, CacheFormat::bf16);
  const DcpRun run = f.run(dcp::Merge::all_to_all, dcp::QueryQuant::none);
  for (int r = 0; r < 4; ++r) {
    const auto* o = reinterpret_cast<const float*>(run.out[static_cast<std::size_t>(r)].data());
    for (int n = 0; n < 2; ++n) {
      EXPECT_TRUE(std::isfinite(run.lse[static_cast<std::size_t>(r)][static_cast<std::size_t>(n)]));
      for (int i = 0; i < kLatentDim; ++i)
        ASSERT_EQ(o[n * kLatentDim + i], num::bf16_to_f32(f.req.kv_c[static_cast<std::size_t>(i)])) << r << "," << i;
    }
  }
}

// A rank whose arguments are bad throws before touching its outputs; its peers time out instead
// of hanging, and nothing of theirs is written either.
TEST(DcpDecodeEdge, BadArgumentOnOneRankFailsEveryRank) {
  const Scenario sc{"bad", 2, 1, 16, {5}, 1};
  DcpFixture f(sc, CacheFormat::bf16);
  auto comms = detail::make_cpu_group(2, std::chrono::milliseconds(300));
  std::vector<std::vector<uint16_t>> outs(2, std::vector<uint16_t>(2 * kLatentDim, 0xABCD));
  std::atomic<int> errors{0};
  std::vector<std::string> messages(2);
  run_ranks(2, [&](int r) {
    std::vector<uint8_t> ws(dcp::decode_workspace_size(1, 1, 2, 2, Device::cpu()));
    std::vector<float> lse(2, 5.0f);
    dcp::DecodeOptions o;
    o.softmax_scale = r == 1 ? -1.0f : 0.0625f;  // rank 1 is misconfigured
    try {
      dcp::decode(*comms[static_cast<std::size_t>(r)],
                  Tensor(f.q.data() + r * 2 * kHeadDim, DType::bf16, {1, 1, 2, kHeadDim}, {4 * kHeadDim, 4 * kHeadDim, kHeadDim, 1}),
                  f.ranks[static_cast<std::size_t>(r)]->cache, f.bt_dcp.tensor, Tensor(f.lens.data(), DType::i32, {1}),
                  Tensor(outs[static_cast<std::size_t>(r)].data(), DType::bf16, {1, 1, 2, kLatentDim}),
                  Tensor(lse.data(), DType::f32, {1, 1, 2}), o, {ws.data(), ws.size()});
    } catch (const Error& e) {
      ++errors;
      messages[static_cast<std::size_t>(r)] = e.what();
      EXPECT_EQ(lse[0], 5.0f);
    }
  });
  EXPECT_EQ(errors.load(), 2);
  EXPECT_NE(messages[1].find("softmax_scale"), std::string::npos) << messages[1];
  EXPECT_NE(messages[0].find("timed out"), std::string::npos) << messages[0];
  for (auto& o : outs)
    for (uint16_t v : o) ASSERT_EQ(v, 0xABCD);
}

// A communicator on a CUDA device in a build without CUDA: a clear error, no collective.
class FakeCudaComm final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world() const override { return 1; }
  Device device() const override { return Device::cuda(0); }
  void all_gather(const void*, void*, std::size_t, Stream) override { ADD_FAILURE() << "collective called"; }
  void reduce_scatter_sum(const float*, float*, std::size_t, Stream) override { ADD_FAILURE() << "collective called"; }
  void all_to_all(const void*, void*, std::size_t, Stream) override { ADD_FAILURE() << "collective called"; }
};

TEST(DcpDecodeEdge, CudaDeviceIsRejectedClearly) {
  if (built_with_cuda()) GTEST_SKIP() << "exercises a build without the CUDA backend";
  FakeCudaComm comm;
  OwnedCache cache(CacheFormat::bf16, 1, 16);
  cache.cache.device = Device::cuda(0);
  std::vector<int32_t> lens{0}, table{0};
  std::vector<uint16_t> q(kHeadDim), out(kLatentDim);
  std::vector<float> lse(1);
  const Device g = Device::cuda(0);
  dcp::DecodeOptions o;
  o.softmax_scale = 0.1f;
  std::vector<uint8_t> ws(1 << 20);
  try {
    dcp::decode(comm, Tensor(q.data(), DType::bf16, {1, 1, 1, kHeadDim}, g), cache.cache,
                Tensor(table.data(), DType::i32, {1, 1}, g), Tensor(lens.data(), DType::i32, {1}, g),
                Tensor(out.data(), DType::bf16, {1, 1, 1, kLatentDim}, g), Tensor(lse.data(), DType::f32, {1, 1, 1}, g), o,
                {ws.data(), ws.size()});
    ADD_FAILURE() << "accepted a CUDA device";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cuda:0"), std::string::npos) << e.what();
  }
}

// ---- context gather -------------------------------------------------------------------------------

struct GatherScenario {
  const char* name;
  int world, interleave, block_size;
  std::vector<int32_t> seq_starts;  // multiples of I·W
  std::vector<int32_t> chunk_lens;
  DType out_dtype;
};

const GatherScenario kGather[] = {
    {"W1_I1_bs16", 1, 1, 16, {0, 16}, {7, 40}, DType::bf16},
    {"W2_I1_bs16", 2, 1, 16, {0, 4, 10}, {1, 33, 0}, DType::f32},
    {"W3_I16_bs16", 3, 16, 16, {0, 48, 96}, {100, 1, 47}, DType::bf16},
    {"W4_I64_bs64", 4, 64, 64, {0, 256}, {300, 65}, DType::f32},
    {"W8_I1_bs1", 8, 1, 1, {8, 0, 16}, {3, 29, 9}, DType::bf16},
    {"W2_I16_bs64_many_small", 2, 16, 64, {0, 32, 64, 0, 96}, {1, 1, 2, 17, 5}, DType::bf16},
};

class DcpGather : public ::testing::TestWithParam<std::tuple<CacheFormat, int>> {};

TEST_P(DcpGather, EqualsSingleRankDequantGather) {
  const auto [format, idx] = GetParam();
  const GatherScenario& g = kGather[idx];
  const int W = g.world, I = g.interleave, bs = g.block_size, B = static_cast<int>(g.seq_starts.size());
  // Each request holds seq_start + chunk_len tokens; the chunk is its tail.
  std::vector<int32_t> total;
  for (int b = 0; b < B; ++b) total.push_back(g.seq_starts[b] + g.chunk_lens[b]);
  Requests req(total);
  std::vector<int64_t> need1;
  for (int32_t L : total) need1.push_back(ceil_div(L, bs));
  BlockTable bt1(need1), btw(blocks_needed(req, bs, W, I));
  OwnedCache single(format, bt1.num_blocks, bs, 0.017f);
  auto s1 = plain_slots(req, bt1, bs);
  write_tokens(req, single.cache, s1);
  std::vector<std::unique_ptr<OwnedCache>> ranks;
  for (int r = 0; r < W; ++r) {
    ranks.push_back(std::make_unique<OwnedCache>(format, btw.num_blocks, bs, 0.017f, 0x77));
    auto sr = dcp_slots(req, btw, bs, {W, r, I});
    write_tokens(req, ranks.back()->cache, sr);
  }
  std::vector<int32_t> cu{0}, starts = g.seq_starts;
  for (int32_t l : g.chunk_lens) cu.push_back(cu.back() + l);
  const int64_t rows = cu.back() + 3, width = single.cache.desc.row_width();  // 3 spare rows stay untouched
  const std::size_t row_bytes = static_cast<std::size_t>(width) * dtype_size(g.out_dtype);

  std::vector<uint8_t> expect(static_cast<std::size_t>(rows) * row_bytes, 0x3C);
  GatherOptions opts;
  opts.seq_starts = Tensor(starts.data(), DType::i32, {B});
  gather_dequant_cache(single.cache, bt1.tensor, Tensor(cu.data(), DType::i32, {B + 1}),
                       Tensor(expect.data(), g.out_dtype, {rows, width}), opts);

  auto comms = make_cpu_group(W);
  std::vector<std::vector<uint8_t>> outs(static_cast<std::size_t>(W));
  run_ranks(W, [&](int r) {
    auto& out = outs[static_cast<std::size_t>(r)];
    out.assign(expect.size(), 0x3C);
    std::vector<uint8_t> ws(dcp::gather_context_workspace_size(single.cache.desc, rows, B, W, I));
    dcp::gather_context(*comms[static_cast<std::size_t>(r)], ranks[static_cast<std::size_t>(r)]->cache, btw.tensor,
                        Tensor(cu.data(), DType::i32, {B + 1}), Tensor(starts.data(), DType::i32, {B}),
                        Tensor(out.data(), g.out_dtype, {rows, width}), I, {ws.data(), ws.size()});
  });
  for (int r = 0; r < W; ++r) EXPECT_TRUE(outs[static_cast<std::size_t>(r)] == expect) << "rank " << r << " differs";
}

INSTANTIATE_TEST_SUITE_P(Cpu, DcpGather,
                         ::testing::Combine(::testing::Values(CacheFormat::bf16, CacheFormat::fp8,
                                                              CacheFormat::fp8_ds_mla, CacheFormat::dsv4),
                                            ::testing::Range(0, static_cast<int>(std::size(kGather)))),
                         [](const auto& info) {
                           return std::string(format_name(std::get<0>(info.param))) + "_" +
                                  kGather[std::get<1>(info.param)].name;
                         });

// dsv4 against its own gather op (op 5): the last gather_len tokens of each request.
TEST(DcpGatherEdge, Dsv4MatchesDequantGatherOp) {
  const int W = 2, I = 16, bs = 64;
  std::vector<int32_t> starts{32, 0}, chunk{40, 70}, total{72, 70};
  Requests req(total);
  BlockTable bt1({2, 2}), btw(blocks_needed(req, bs, W, I));
  OwnedCache single(CacheFormat::dsv4, bt1.num_blocks, bs);
  auto s1 = plain_slots(req, bt1, bs);
  write_tokens(req, single.cache, s1);
  std::vector<uint16_t> expect(2 * 70 * 512, 0);
  dsv4_dequant_gather(single.cache, bt1.tensor, Tensor(total.data(), DType::i32, {2}),
                      Tensor(expect.data(), DType::bf16, {2, 70, 512}), Tensor(chunk.data(), DType::i32, {2}), 0);
  std::vector<std::unique_ptr<OwnedCache>> ranks;
  for (int r = 0; r < W; ++r) {
    ranks.push_back(std::make_unique<OwnedCache>(CacheFormat::dsv4, btw.num_blocks, bs));
    auto sr = dcp_slots(req, btw, bs, {W, r, I});
    write_tokens(req, ranks.back()->cache, sr);
  }
  std::vector<int32_t> cu{0, 40, 110};
  auto comms = make_cpu_group(W);
  std::vector<std::vector<uint16_t>> outs(2, std::vector<uint16_t>(110 * 512));
  run_ranks(W, [&](int r) {
    std::vector<uint8_t> ws(dcp::gather_context_workspace_size(single.cache.desc, 110, 2, W, I));
    dcp::gather_context(*comms[static_cast<std::size_t>(r)], ranks[static_cast<std::size_t>(r)]->cache, btw.tensor,
                        Tensor(cu.data(), DType::i32, {3}), Tensor(starts.data(), DType::i32, {2}),
                        Tensor(outs[static_cast<std::size_t>(r)].data(), DType::bf16, {110, 512}), I,
                        {ws.data(), ws.size()});
  });
  for (int r = 0; r < W; ++r)
    for (int b = 0; b < 2; ++b)
      for (int i = 0; i < chunk[b]; ++i)
        ASSERT_TRUE(std::equal(expect.begin() + (b * 70 + i) * 512, expect.begin() + (b * 70 + i + 1) * 512,
                               outs[static_cast<std::size_t>(r)].begin() + (cu[b] + i) * 512))
            << "rank " << r << " request " << b << " row " << i;
}

TEST(DcpGatherEdge, RejectsChunkStartNotMultipleOfInterleaveTimesWorld) {
  const int W = 2, I = 16, bs = 16;
  Requests req({64});
  BlockTable btw(blocks_needed(req, bs, W, I));
  OwnedCache cache(CacheFormat::fp8, btw.num_blocks, bs);
  std::vector<int32_t> cu{0, 16}, starts{16};  // a multiple of W but not of I·W, vLLM's gap
  std::vector<float> out(16 * 576, 1.5f);
  std::vector<uint8_t> ws(1 << 20);
  auto comms2 = detail::make_cpu_group(W, std::chrono::milliseconds(2000));
  std::vector<std::string> msgs(2);
  run_ranks(W, [&](int r) {
    try {
      dcp::gather_context(*comms2[static_cast<std::size_t>(r)], cache.cache, btw.tensor,
                          Tensor(cu.data(), DType::i32, {2}), Tensor(starts.data(), DType::i32, {1}),
                          Tensor(out.data(), DType::f32, {16, 576}), I, {ws.data(), ws.size()});
    } catch (const Error& e) {
      msgs[static_cast<std::size_t>(r)] = e.what();
    }
  });
  for (const auto& m : msgs) {
    EXPECT_NE(m.find("seq_starts[0]"), std::string::npos) << m;
    EXPECT_NE(m.find("32"), std::string::npos) << m;
  }
  for (float v : out) ASSERT_EQ(v, 1.5f);
}

TEST(DcpGatherEdge, WorkspaceTooSmallIsRejected) {
  OwnedCache cache(CacheFormat::bf16, 4, 16);
  BlockTable bt({1});
  std::vector<int32_t> cu{0, 10}, starts{0};
  std::vector<uint16_t> out(10 * 576);
  auto comms = make_cpu_group(1);
  const std::size_t need = dcp::gather_context_workspace_size(cache.cache.desc, 10, 1, 1, 1);
  std::vector<uint8_t> ws(need - 1);
  try {
    dcp::gather_context(*comms[0], cache.cache, bt.tensor, Tensor(cu.data(), DType::i32, {2}),
                        Tensor(starts.data(), DType::i32, {1}), Tensor(out.data(), DType::bf16, {10, 576}), 1,
                        {ws.data(), ws.size()});
    ADD_FAILURE() << "accepted a short workspace";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("workspace.bytes"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace mlakv::test
