// Bad inputs to mla_decode, merge_states and the DCP entry points (SPEC §5): each throws
// mlakv::Error naming the argument, and leaves out / lse untouched.
#include <gtest/gtest.h>

#include <climits>
#include <functional>

#include "attention_test_util.hpp"

namespace mlakv::test {
namespace {

using namespace attn;

// A valid decode that each test breaks in one place.
struct DecodeArgs {
  static constexpr int B = 2, S = 2, H = 4, bs = 16;
  OwnedCache cache{CacheFormat::fp8, 8, bs};
  std::vector<int32_t> table{0, 1, 1000000, 2, 3, 4}, lens{20, 47};
  std::vector<uint16_t> q = random_bf16(B * S * H * kHeadDim);
  std::vector<uint16_t> out = std::vector<uint16_t>(B * S * H * kLatentDim, 0x4242);
  std::vector<float> lse = std::vector<float>(B * S * H, 42.0f);
  float q_scale = 0.5f;
  Tensor tq{q.data(), DType::bf16, {B, S, H, kHeadDim}};
  Tensor tbt{table.data(), DType::i32, {B, 3}};
  Tensor tlens{lens.data(), DType::i32, {B}};
  Tensor tout{out.data(), DType::bf16, {B, S, H, kLatentDim}};
  Tensor tlse{lse.data(), DType::f32, {B, S, H}};
  DecodeParams params{0.1f, true, nullptr, {}};

  void run() { mla_decode(tq, cache.cache, tbt, tlens, tout, tlse, params); }
  bool untouched() const {
    for (uint16_t v : out)
      if (v != 0x4242) return false;
    for (float v : lse)
      if (v != 42.0f) return false;
    return true;
  }
};

// Breaks one argument of a valid call (Args: run() and untouched()), expects an Error naming it
// and the outputs byte-for-byte as they were.
template <class Args> void expect_rejected_as(const std::function<void(Args&)>& breakit, const std::string& needle) {
  Args a;
  breakit(a);
  try {
    a.run();
    ADD_FAILURE() << "accepted; expected an error naming " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "message: " << e.what();
  }
  EXPECT_TRUE(a.untouched()) << needle;
}

void expect_rejected(const std::function<void(DecodeArgs&)>& breakit, const std::string& needle) {
  expect_rejected_as<DecodeArgs>(breakit, needle);
}

TEST(ValidateDecode, TheBaselineIsValid) {
  DecodeArgs a;
  EXPECT_NO_THROW(a.run());
  EXPECT_FALSE(a.untouched());
}

TEST(ValidateDecode, QueryShapeAndType) {
  expect_rejected([](DecodeArgs& a) { a.tq.shape[3] = 512; }, "q: head width 512");
  expect_rejected([](DecodeArgs& a) { a.tq.dtype = DType::f32; }, "q: dtype f32");
  expect_rejected([](DecodeArgs& a) { a.tq.ndim = 3; }, "q:");
  expect_rejected([](DecodeArgs& a) { a.tq.shape[1] = 17, a.tout.shape[1] = 17, a.tlse.shape[1] = 17; }, "s_q");
  expect_rejected([](DecodeArgs& a) { a.tq.shape[2] = 0; }, "heads");
  expect_rejected([](DecodeArgs& a) { a.tq.stride[3] = 2; }, "q: innermost stride");
  expect_rejected([](DecodeArgs& a) { a.tq.data = nullptr; }, "q: null data");
}

TEST(ValidateDecode, RejectsBatchOrQueryRowsBeyondAnInt) {
  // Broadcast (stride 0) views: the CUDA path narrows these counts to int.
  const int64_t n = (int64_t{1} << 32) + 1;
  expect_rejected(
      [n](DecodeArgs& a) {
        a.tq = Tensor(a.q.data(), DType::bf16, {n, 1, 1, kHeadDim}, {0, kHeadDim, kHeadDim, 1});
        a.tout = Tensor(a.out.data(), DType::bf16, {n, 1, 1, kLatentDim}, {0, kLatentDim, kLatentDim, 1});
        a.tlse = Tensor(a.lse.data(), DType::f32, {n, 1, 1}, {0, 1, 1});
        a.tbt = Tensor(a.table.data(), DType::i32, {n, 3}, {0, 1});
        a.tlens = Tensor(a.lens.data(), DType::i32, {n}, {0});
      },
      "q: batch (dimension 0) is 4294967297");
  expect_rejected(
      [](DecodeArgs& a) {
        const int64_t h = int64_t{1} << 30;  // s_q 2 x 2^30 heads = 2^31 rows
        a.tq = Tensor(a.q.data(), DType::bf16, {2, 2, h, kHeadDim}, {0, 0, 0, 1});
        a.tout = Tensor(a.out.data(), DType::bf16, {2, 2, h, kLatentDim}, {0, 0, 0, 1});
        a.tlse = Tensor(a.lse.data(), DType::f32, {2, 2, h}, {0, 0, 0});
      },
      "q: s_q x heads is 2 x 1073741824");
  EXPECT_THROW(mla_decode_workspace_size(1, 16, 1 << 28, Device::cpu()), Error);
}

TEST(ValidateDecode, E4m3QueryNeedsScale) {
  expect_rejected([](DecodeArgs& a) { a.tq.dtype = DType::e4m3; }, "params.q_scale");
  expect_rejected(
      [](DecodeArgs& a) {
        a.tq.dtype = DType::e4m3;
        a.q_scale = 0.0f;
        a.params.q_scale = &a.q_scale;
      },
      "params.q_scale: 0");
}

TEST(ValidateDecode, RejectsMisalignedQueryScalePointer) {
  expect_rejected(
      [](DecodeArgs& a) {
        a.tq.dtype = DType::e4m3;
        a.params.q_scale = reinterpret_cast<const float*>(reinterpret_cast<const uint8_t*>(a.lse.data()) + 1);
      },
      "params.q_scale: address");
}

TEST(ValidateDecode, CacheFormatAndScale) {
  expect_rejected(
      [](DecodeArgs& a) {
        a.cache.cache.desc.format = CacheFormat::dsv4;
        a.cache.cache.desc.num_blocks = 1;  // keep the byte size within the buffer
      },
      "dsv4");
  expect_rejected([](DecodeArgs& a) { a.cache.cache.scale = nullptr; }, "cache.scale");
  expect_rejected([](DecodeArgs& a) { a.cache.cache.device = Device::cuda(0); }, "cache");
}

TEST(ValidateDecode, BlockTableAndLengths) {
  expect_rejected([](DecodeArgs& a) { a.tbt.dtype = DType::i64; }, "block_table: dtype i64");
  expect_rejected([](DecodeArgs& a) { a.tbt.shape[0] = 1; }, "block_table: dimension 0");
  expect_rejected([](DecodeArgs& a) { a.lens[0] = -1; }, "seq_lens[0]: -1");
  expect_rejected([](DecodeArgs& a) { a.lens[1] = 49; }, "seq_lens[1]: 49");  // 3 blocks x 16
  expect_rejected([](DecodeArgs& a) { a.lens[0] = 33; }, "block_table[0][2]: block id 1000000");
  expect_rejected([](DecodeArgs& a) { a.table[3] = 8; }, "block_table[1][0]: block id 8");
  expect_rejected([](DecodeArgs& a) { a.table[4] = -1; }, "block_table[1][1]");
  expect_rejected([](DecodeArgs& a) { a.tlens.shape[0] = 3; }, "seq_lens: dimension 0");
}

TEST(ValidateDecode, AcceptsBlockTableWhoseRowCapacityOverflowsInt64) {
  DecodeArgs a;  // rows of 2^60 entries (only the used ones exist) x 16 tokens: more than INT64_MAX tokens
  a.tbt = Tensor(a.table.data(), DType::i32, {2, int64_t{1} << 60}, {3, 1});
  EXPECT_NO_THROW(a.run());
  expect_rejected(
      [](DecodeArgs& b) {
        b.tbt = Tensor(b.table.data(), DType::i32, {2, int64_t{1} << 60}, {3, 1});
        b.lens[0] = 33;  // needs entry [0][2]: 1000000
      },
      "block_table[0][2]: block id 1000000");
}

TEST(ValidateDecode, UnusedBlockTableEntriesAreNotChecked) {
  DecodeArgs a;
  a.lens = {32, 0};  // entries [0][2] and row 1 unused
  a.table[3] = -5;
  EXPECT_NO_THROW(a.run());
}

TEST(ValidateDecode, OutputsAndScale) {
  expect_rejected([](DecodeArgs& a) { a.tout.shape[3] = 576; }, "out: width 576");
  expect_rejected([](DecodeArgs& a) { a.tout.dtype = DType::f16; }, "out: dtype f16");
  expect_rejected([](DecodeArgs& a) { a.tout.shape[2] = 3; }, "out: dimension 2");
  expect_rejected([](DecodeArgs& a) { a.tlse.dtype = DType::bf16; }, "lse: dtype bf16");
  expect_rejected([](DecodeArgs& a) { a.tlse.shape[1] = 1; }, "lse: dimension 1");
  expect_rejected([](DecodeArgs& a) { a.tout.device = Device::cuda(0); }, "out is on cuda:0");
  expect_rejected([](DecodeArgs& a) { a.params.softmax_scale = 0.0f; }, "params.softmax_scale: 0");
  expect_rejected([](DecodeArgs& a) { a.params.softmax_scale = NAN; }, "params.softmax_scale");
}

// Outputs written in parallel must not have two elements at one address (a broadcast view, or
// heads laid closer than a row): the kernels would race. Padded and permuted views stay valid.
TEST(ValidateDecode, RejectsOutputsWhoseElementsShareMemory) {
  expect_rejected([](DecodeArgs& a) { a.tout.stride[2] = 0; }, "out: stride 0 of dimension 2");
  expect_rejected([](DecodeArgs& a) { a.tout.stride[2] = 256; }, "out: stride 256 of dimension 2");
  expect_rejected([](DecodeArgs& a) { a.tlse.stride[0] = 0; }, "lse: stride 0 of dimension 0");
  DecodeArgs ok;
  ok.tlse = Tensor(ok.lse.data(), DType::f32, {ok.B, ok.S, ok.H}, {1, ok.B * ok.H, ok.B});  // permuted, disjoint
  EXPECT_NO_THROW(ok.run());
}

TEST(ValidateDecode, ShardParameters) {
  expect_rejected([](DecodeArgs& a) { a.params.shard = {2, 2, 1}; }, "shard.rank");
  expect_rejected([](DecodeArgs& a) { a.params.shard = {2, 0, 3}; }, "shard.interleave: 3");
  expect_rejected([](DecodeArgs& a) { a.params.shard = {0, 0, 1}; }, "shard.world");
  // Global length 150 over 2 ranks, interleave 16: rank 0 holds 80 local tokens > 3 blocks x 16.
  expect_rejected(
      [](DecodeArgs& a) {
        a.params.shard = {2, 0, 16};
        a.lens[1] = 150;
      },
      "on DCP rank 0");
  DecodeArgs ok;
  ok.params.shard = {2, 1, 16};
  ok.lens[1] = 94;  // rank 1 holds 46 tokens: fits
  EXPECT_NO_THROW(ok.run());
}

// ---- merge_states ---------------------------------------------------------------------------------

struct MergeArgs {
  std::vector<float> oa = random_f32(2 * 3 * 8), ob = random_f32(2 * 3 * 8), o = std::vector<float>(2 * 3 * 8, 9.0f);
  std::vector<float> la = random_f32(6), lb = random_f32(6), l = std::vector<float>(6, 9.0f);
  Tensor toa{oa.data(), DType::f32, {2, 3, 8}}, tob{ob.data(), DType::f32, {2, 3, 8}}, to{o.data(), DType::f32, {2, 3, 8}};
  Tensor tla{la.data(), DType::f32, {2, 3}}, tlb{lb.data(), DType::f32, {2, 3}}, tl{l.data(), DType::f32, {2, 3}};
  void run() { merge_states(toa, tla, tob, tlb, to, tl); }
  bool untouched() const {
    for (float v : o)
      if (v != 9.0f) return false;
    for (float v : l)
      if (v != 9.0f) return false;
    return true;
  }
};

void expect_merge_rejected(const std::function<void(MergeArgs&)>& breakit, const std::string& needle) {
  expect_rejected_as<MergeArgs>(breakit, needle);
}

TEST(ValidateMerge, Rejects) {
  MergeArgs ok;
  EXPECT_NO_THROW(ok.run());
  expect_merge_rejected([](MergeArgs& a) { a.tob.shape[2] = 4; }, "o_b: dimension 2");
  expect_merge_rejected([](MergeArgs& a) { a.to.shape[0] = 1; }, "o: dimension 0");
  expect_merge_rejected([](MergeArgs& a) { a.tla.dtype = DType::bf16; }, "lse_a: dtype bf16");
  expect_merge_rejected([](MergeArgs& a) { a.tlb.shape[1] = 2; }, "lse_b: dimension 1");
  expect_merge_rejected([](MergeArgs& a) { a.to.dtype = DType::e4m3; }, "o: dtype e4m3");
  expect_merge_rejected([](MergeArgs& a) { a.tob.stride[2] = 2; }, "o_b: innermost stride");
  expect_merge_rejected([](MergeArgs& a) { a.toa.ndim = 2; }, "o_a:");
  expect_merge_rejected([](MergeArgs& a) { a.tl.device = Device::cuda(1); }, "lse is on cuda:1");
  expect_merge_rejected([](MergeArgs& a) { a.to.stride[0] = 8; }, "makes elements share memory");
  expect_merge_rejected([](MergeArgs& a) { a.tl.stride[1] = 0; }, "lse: stride 0 of dimension 1");
}

TEST(ValidateMerge, RejectsDataNotAlignedToItsElementType) {
  expect_merge_rejected([](MergeArgs& a) { a.tl.data = reinterpret_cast<uint8_t*>(a.l.data()) + 2; },
                        "lse: data address");
  expect_merge_rejected([](MergeArgs& a) { a.tla.data = reinterpret_cast<uint8_t*>(a.la.data()) + 1; },
                        "lse_a: data address");
}

// ---- DCP entry points ------------------------------------------------------------------------------

TEST(ValidateDcp, DecodeOptionsAndWorkspace) {
  DecodeArgs a;
  auto comms = make_cpu_group(1);
  std::vector<uint8_t> ws(dcp::decode_workspace_size(2, 2, 4, 1, Device::cpu()));
  auto attempt = [&](dcp::DecodeOptions o, std::size_t bytes, const std::string& needle) {
    try {
      dcp::decode(*comms[0], a.tq, a.cache.cache, a.tbt, a.tlens, a.tout, a.tlse, o, {ws.data(), bytes});
      ADD_FAILURE() << "accepted; expected " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
    EXPECT_TRUE(a.untouched());
  };
  dcp::DecodeOptions o;
  o.softmax_scale = 0.1f;
  o.q_quant = dcp::QueryQuant::e4m3_after_gather;
  attempt(o, ws.size(), "opts.q_scale");
  o.q_quant = dcp::QueryQuant::none;
  attempt(o, ws.size() - 1, "workspace.bytes");
  o.interleave = 5;
  attempt(o, ws.size(), "shard.interleave: 5");
  o.interleave = 1;
  o.softmax_scale = -1;
  attempt(o, ws.size(), "softmax_scale");
  o.softmax_scale = 0.1f;
  a.lens[0] = 1000;
  attempt(o, ws.size(), "seq_lens[0]: 1000");
  a.lens[0] = 20;
  EXPECT_NO_THROW(dcp::decode(*comms[0], a.tq, a.cache.cache, a.tbt, a.tlens, a.tout, a.tlse, o, {ws.data(), ws.size()}));
}

TEST(ValidateDcp, RejectsMisalignedQueryScalePointer) {
  DecodeArgs a;
  auto comms = make_cpu_group(1);
  std::vector<uint8_t> ws(dcp::decode_workspace_size(2, 2, 4, 1, Device::cpu()));
  std::vector<float> scale(2, 0.5f);
  dcp::DecodeOptions o;
  o.softmax_scale = 0.1f;
  o.q_quant = dcp::QueryQuant::e4m3_after_gather;
  o.q_scale = reinterpret_cast<const float*>(reinterpret_cast<const uint8_t*>(scale.data()) + 2);
  try {
    dcp::decode(*comms[0], a.tq, a.cache.cache, a.tbt, a.tlens, a.tout, a.tlse, o, {ws.data(), ws.size()});
    ADD_FAILURE() << "accepted a misaligned opts.q_scale";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("opts.q_scale: address"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(a.untouched());
}

TEST(ValidateDcp, DecodeRejectsCountsBeyondAnInt) {
  // 2^32 + 1 broadcast requests (stride 0): narrowed to int, the workspace was laid out for one
  // while pack_q wrote all of them.
  DecodeArgs a;
  auto comms = make_cpu_group(1);
  std::vector<uint8_t> ws(dcp::decode_workspace_size(1, 1, 1, 1, Device::cpu()));
  const int64_t n = (int64_t{1} << 32) + 1;
  const Tensor q(a.q.data(), DType::bf16, {n, 1, 1, kHeadDim}, {0, kHeadDim, kHeadDim, 1});
  const Tensor out(a.out.data(), DType::bf16, {n, 1, 1, kLatentDim}, {0, kLatentDim, kLatentDim, 1});
  const Tensor lse(a.lse.data(), DType::f32, {n, 1, 1}, {0, 1, 1});
  const Tensor bt(a.table.data(), DType::i32, {1, 3}), lens(a.lens.data(), DType::i32, {1});
  dcp::DecodeOptions o;
  o.softmax_scale = 0.1f;
  try {
    dcp::decode(*comms[0], q, a.cache.cache, bt, lens, out, lse, o, {ws.data(), ws.size()});
    ADD_FAILURE() << "accepted 2^32 + 1 requests";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("q_local: dimension 0 is 4294967297"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(a.untouched());
}

TEST(ValidateDcp, GatherContextRejectsMoreRequestsThanAnInt) {
  OwnedCache cache(CacheFormat::bf16, 2, 16);
  auto comms = make_cpu_group(1);
  std::vector<int32_t> zeros(4, 0);
  std::vector<uint16_t> out(4 * kHeadDim, 0x4242);
  std::vector<uint8_t> ws(dcp::gather_context_workspace_size(cache.cache.desc, 4, 1, 1, 1));
  const Tensor tout(out.data(), DType::bf16, {4, kHeadDim});
  for (int64_t n : {(int64_t{1} << 32) + 1, INT64_MAX}) {  // broadcast requests (stride 0), all empty
    const Tensor starts(zeros.data(), DType::i32, {n}, {0});
    const Tensor cu(zeros.data(), DType::i32, {n == INT64_MAX ? n : n + 1}, {0});
    const Tensor bt(zeros.data(), DType::i32, {n, 1}, {0, 1});
    try {
      dcp::gather_context(*comms[0], cache.cache, bt, cu, starts, tout, 1, {ws.data(), ws.size()});
      ADD_FAILURE() << "accepted " << n << " requests";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("seq_starts: i32[" + std::to_string(n) + "]"), std::string::npos) << e.what();
    }
    EXPECT_EQ(out, std::vector<uint16_t>(4 * kHeadDim, 0x4242));
  }
}

TEST(ValidateDcp, WorkspaceSizeQueries) {
  EXPECT_THROW(dcp::decode_workspace_size(1, 0, 1, 1, Device::cpu()), Error);
  EXPECT_THROW(dcp::decode_workspace_size(1, 1, 1, 0, Device::cpu()), Error);
  EXPECT_THROW(dcp::gather_context_workspace_size({}, -1, 1, 1, 1), Error);
  EXPECT_GT(dcp::decode_workspace_size(0, 1, 1, 2, Device::cpu()), 0u);
  // Grows with the world and the rows.
  EXPECT_LT(dcp::decode_workspace_size(4, 1, 8, 2, Device::cpu()), dcp::decode_workspace_size(4, 1, 8, 4, Device::cpu()));
  CacheDesc d{CacheFormat::fp8, 10, 64, 0};
  EXPECT_LT(dcp::gather_context_workspace_size(d, 100, 2, 2, 1), dcp::gather_context_workspace_size(d, 1000, 2, 2, 1));
}

TEST(ValidateDcp, WorkspaceSizeQueriesRejectSizesThatOverflow) {
  // Each used to wrap around (or overflow int / int64) to a small size an op would write past.
  EXPECT_THROW(dcp::decode_workspace_size(INT_MAX, INT_MAX, 17, 65536, Device::cpu()), Error);
  EXPECT_THROW(dcp::decode_workspace_size(1, 1, 1 << 20, 1 << 16, Device::cpu()), Error);  // heads x world > INT_MAX
  const CacheDesc d{CacheFormat::fp8_ds_mla, 10, 64, 0};
  EXPECT_THROW(dcp::gather_context_workspace_size(d, INT64_MAX, 16, 3, 16), Error);
  EXPECT_THROW(dcp::gather_context_workspace_size(d, int64_t{1} << 62, 0, 1, 1), Error);
  EXPECT_THROW(dcp::gather_context_workspace_size(d, 1000, INT_MAX, INT_MAX, 1), Error);
  // Large but representable sizes are still answered.
  EXPECT_GT(dcp::decode_workspace_size(1 << 16, 16, 128, 8, Device::cpu()), std::size_t{1} << 32);
  EXPECT_GT(dcp::gather_context_workspace_size(d, int64_t{1} << 40, 16, 2, 1), std::size_t{1} << 40);
}

TEST(ValidateDcp, SlotMappingArguments) {
  std::vector<int64_t> pos{0, 1}, slots(2, 5);
  std::vector<int32_t> req{0, 0}, table{0};
  const Tensor tp(pos.data(), DType::i64, {2}), tr(req.data(), DType::i32, {2}), tbt(table.data(), DType::i32, {1, 1}),
      ts(slots.data(), DType::i64, {2});
  auto expect = [&](const std::function<void()>& f, const std::string& needle) {
    try {
      f();
      ADD_FAILURE() << "accepted; expected " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
    EXPECT_EQ(slots, (std::vector<int64_t>{5, 5}));
  };
  expect([&] { dcp::slot_mapping(Tensor(pos.data(), DType::i32, {2}), tr, tbt, 4, {1, 0, 1}, ts); }, "positions: dtype");
  expect([&] { dcp::slot_mapping(tp, Tensor(req.data(), DType::i32, {1}), tbt, 4, {1, 0, 1}, ts); }, "token_to_req");
  expect([&] { dcp::slot_mapping(tp, tr, tbt, 4, {1, 0, 1}, Tensor(slots.data(), DType::i32, {2})); }, "slot_mapping: dtype");
  expect([&] { dcp::slot_mapping(tp, tr, tbt, 4, {2, 0, 8}, ts); }, "shard.interleave: 8");
  pos[1] = 9;  // local index 9 needs block entry 2 of a 1-entry table
  expect([&] { dcp::slot_mapping(tp, tr, tbt, 4, {1, 0, 1}, ts); }, "positions[1]: 9");
}

}  // namespace
}  // namespace mlakv::test
