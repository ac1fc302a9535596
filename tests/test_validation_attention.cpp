// Bad inputs to mla_decode, merge_states and the DCP entry points (SPEC §5): each throws
// mlakv::Error naming the argument, and leaves out / lse untouched.
#include <gtest/gtest.h>

#include <climits>
#include <cstring>
#include <functional>
#include <tuple>

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

// Runs `run`, which must throw an Error mentioning every fragment, and checks that `memory()` (a
// copy of every buffer the call was given: an output pointed into an input is not in out / lse)
// is what it was.
template <class Memory>
void expect_rejected_unchanged(const std::function<void()>& run, const Memory& memory,
                               std::initializer_list<const char*> fragments) {
  const auto before = memory();
  try {
    run();
    ADD_FAILURE() << "accepted; expected an error mentioning " << *fragments.begin();
  } catch (const Error& e) {
    for (const char* f : fragments)
      EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << "message \"" << e.what() << "\" lacks \"" << f << "\"";
  }
  EXPECT_TRUE(memory() == before) << "a rejected call changed memory (" << *fragments.begin() << ")";
}

auto decode_memory(const DecodeArgs& a) {
  return std::make_tuple(a.q, a.out, a.lse, a.table, a.lens, a.cache.bytes, *a.cache.scale);
}

// A decode whose memory `alias` made overlap; expects it rejected with every fragment, nothing written.
void expect_decode_overlap_rejected(const std::function<void(DecodeArgs&)>& alias,
                                    std::initializer_list<const char*> fragments) {
  DecodeArgs a;
  alias(a);
  expect_rejected_unchanged([&] { a.run(); }, [&] { return decode_memory(a); }, fragments);
}

// Rows claiming 2^60 entries reach 2^62 bytes above the table's first entry, over any output
// allocated after it: `arena` holds out, lse and then the table's real entries, so that the
// outputs lie below the table and share no memory with it.
void put_outputs_below_huge_table(DecodeArgs& a, std::vector<uint8_t>& arena) {
  const std::size_t out_bytes = a.out.size() * 2, lse_bytes = a.lse.size() * 4, table_bytes = a.table.size() * 4;
  arena.resize(out_bytes + lse_bytes + table_bytes);
  std::memcpy(arena.data(), a.out.data(), out_bytes);
  std::memcpy(arena.data() + out_bytes, a.lse.data(), lse_bytes);
  std::memcpy(arena.data() + out_bytes + lse_bytes, a.table.data(), table_bytes);
  a.tout.data = arena.data();
  a.tlse.data = arena.data() + out_bytes;
  a.tbt = Tensor(arena.data() + out_bytes + lse_bytes, DType::i32, {2, int64_t{1} << 60}, {3, 1});
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
  std::vector<uint8_t> arena;
  put_outputs_below_huge_table(a, arena);
  EXPECT_NO_THROW(a.run());
  DecodeArgs b;
  std::vector<uint8_t> arena_b;
  put_outputs_below_huge_table(b, arena_b);
  b.lens[0] = 33;  // needs entry [0][2]: 1000000
  expect_rejected_unchanged([&] { b.run(); }, [&] { return arena_b; }, {"block_table[0][2]: block id 1000000"});
}

// A block table's whole view is what the GPU may read (it clamps to the view, not to lengths it
// cannot see on the host), so a table whose rows reach over an output is an overlap too.
TEST(ValidateDecode, RejectsBlockTableWhoseRowsReachOverAnOutput) {
  DecodeArgs a;
  std::vector<int32_t> arena(a.table.size() + a.out.size() / 2 + a.lse.size());  // table | out | lse
  std::copy(a.table.begin(), a.table.end(), arena.begin());
  a.tbt = Tensor(arena.data(), DType::i32, {2, int64_t{1} << 60}, {3, 1});
  a.tout.data = arena.data() + a.table.size();
  a.tlse.data = arena.data() + a.table.size() + a.out.size() / 2;
  expect_rejected_unchanged([&] { a.run(); }, [&] { return arena; }, {"out: bf16[2, 2, 4, 512]", "input block_table"});
}

// SPEC §5 and the int64 contract: a view whose element count overflows int64 (here a broadcast
// one, a few bytes of memory) is rejected by its element count, before anything counts it.
TEST(ValidateDecode, RejectsElementCountBeyondInt64) {
  expect_rejected(
      [](DecodeArgs& a) {
        const int64_t n = int64_t{1} << 32;
        a.tq = Tensor(a.q.data(), DType::bf16, {n, n, 1, kHeadDim}, {0, 0, 0, 1});
      },
      "q: bf16[4294967296, 4294967296, 1, 576] on cpu has more than 9223372036854775807 elements");
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

// Kernels write out and lse in parallel while they read q, the cache, the block table, the
// lengths and the scales: an output sharing any byte with one of them is rejected, naming both.
TEST(ValidateDecode, RejectsOutputsOverlappingAnInput) {
  expect_decode_overlap_rejected([](DecodeArgs& a) { a.tout.data = a.q.data(); },
                                 {"out: bf16[2, 2, 4, 512] on cpu at bytes [", "shares memory with input q ("});
  expect_decode_overlap_rejected([](DecodeArgs& a) { a.tout.data = a.cache.bytes.data() + 4096; },
                                 {"out: ", "shares memory with input cache ("});
  expect_decode_overlap_rejected(
      [](DecodeArgs& a) {  // the block table's entries inside out's memory
        std::memcpy(a.out.data() + 64, a.table.data(), a.table.size() * 4);
        a.tbt.data = a.out.data() + 64;
      },
      {"out: ", "shares memory with input block_table ("});
  expect_decode_overlap_rejected(
      [](DecodeArgs& a) {
        std::memcpy(&a.lse[8], a.lens.data(), a.lens.size() * 4);
        a.tlens.data = &a.lse[8];
      },
      {"lse: f32[2, 2, 4]", "shares memory with input seq_lens ("});
  expect_decode_overlap_rejected(
      [](DecodeArgs& a) {
        a.lse[5] = 0.02f;
        a.cache.cache.scale = &a.lse[5];
      },
      {"lse: ", "shares memory with input cache.scale (4 bytes on cpu"});
  expect_decode_overlap_rejected(
      [](DecodeArgs& a) {
        a.tq.dtype = DType::e4m3;
        const float s = 0.5f;
        std::memcpy(a.out.data() + 2, &s, 4);
        a.params.q_scale = reinterpret_cast<const float*>(a.out.data() + 2);
      },
      {"out: ", "shares memory with input params.q_scale ("});
}

TEST(ValidateDecode, RejectsOutAndLseSharingMemory) {
  expect_decode_overlap_rejected([](DecodeArgs& a) { a.tlse.data = a.out.data() + 512; },
                                 {"out: ", "shares memory with output lse ("});
  // Conservative: lse in the padding between out's rows shares no element with out, but lies
  // within its span (the hull of its elements), and is rejected as well.
  expect_decode_overlap_rejected(
      [](DecodeArgs& a) {
        a.out.resize(2 * a.out.size());
        a.tout = Tensor(a.out.data(), DType::bf16, {a.B, a.S, a.H, kLatentDim},
                        {a.S * a.H * 1024, a.H * 1024, 1024, 1});
        a.tlse.data = a.out.data() + kLatentDim;
      },
      {"out: ", "shares memory with output lse ("});
}

// The spans end one past their last byte: outputs right next to the inputs are accepted.
TEST(ValidateDecode, AcceptsOutputsRightNextToItsInputs) {
  DecodeArgs a;
  std::vector<uint16_t> arena;  // q | out | lse | lens | table, each ending where the next starts
  arena.insert(arena.end(), a.q.begin(), a.q.end());
  arena.insert(arena.end(), a.out.begin(), a.out.end());
  arena.resize(arena.size() + 2 * (a.lse.size() + a.lens.size() + a.table.size()));
  uint16_t* p = arena.data();
  a.tq.data = p;
  a.tout.data = p += a.q.size();
  a.tlse.data = p += a.out.size();
  a.tlens.data = p += 2 * a.lse.size();
  std::memcpy(p, a.lens.data(), a.lens.size() * 4);
  a.tbt.data = p += 2 * a.lens.size();
  std::memcpy(p, a.table.data(), a.table.size() * 4);
  EXPECT_NO_THROW(a.run());
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

auto merge_memory(const MergeArgs& a) { return std::make_tuple(a.oa, a.ob, a.o, a.la, a.lb, a.l); }

void expect_merge_overlap_rejected(const std::function<void(MergeArgs&)>& alias,
                                   std::initializer_list<const char*> fragments) {
  MergeArgs a;
  alias(a);
  expect_rejected_unchanged([&] { a.run(); }, [&] { return merge_memory(a); }, fragments);
}

// The merge is element-wise: o (lse) may be exactly o_a or o_b (lse_a or lse_b), each element
// read before it is written, but any other shared byte is rejected.
TEST(ValidateMerge, RejectsOutputsOverlappingAnInputOrEachOther) {
  expect_merge_overlap_rejected(
      [](MergeArgs& a) {  // o_b one row further into o's memory
        a.o.resize(a.o.size() + 8);
        std::copy(a.ob.begin(), a.ob.end(), a.o.begin() + 8);
        a.to.data = a.o.data();
        a.tob.data = a.o.data() + 8;
      },
      {"o: f32[2, 3, 8]", "shares memory with input o_b (", "unless it is exactly that input's view (in place)"});
  expect_merge_overlap_rejected([](MergeArgs& a) { a.to = Tensor(a.oa.data(), DType::bf16, {2, 3, 8}); },
                                {"o: bf16[2, 3, 8]", "shares memory with input o_a ("});  // same address, other type
  expect_merge_overlap_rejected([](MergeArgs& a) { a.tl.data = a.oa.data(); }, {"lse: f32[2, 3]", "input o_a ("});
  expect_merge_overlap_rejected([](MergeArgs& a) { a.tl.data = a.o.data() + 4; }, {"o: ", "shares memory with output lse ("});
}

TEST(ValidateMerge, AcceptsExactlyInPlaceMerge) {
  MergeArgs a;
  a.to = a.toa, a.tl = a.tla;
  EXPECT_NO_THROW(a.run());
  MergeArgs b;
  b.to = b.tob, b.tl = b.tla;
  EXPECT_NO_THROW(b.run());
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

// The step writes out, lse and its whole workspace (the collectives land in it) while it reads
// q_local, the cache, the block table and the lengths.
TEST(ValidateDcp, DecodeRejectsOutputsOverlappingInputsOrTheWorkspace) {
  auto comms = make_cpu_group(1);
  dcp::DecodeOptions o;
  o.softmax_scale = 0.1f;
  auto expect = [&](const std::function<void(DecodeArgs&, std::vector<uint8_t>&)>& alias,
                    std::initializer_list<const char*> fragments) {
    DecodeArgs a;
    std::vector<uint8_t> ws(dcp::decode_workspace_size(2, 2, 4, 1, Device::cpu()));
    alias(a, ws);
    expect_rejected_unchanged(
        [&] { dcp::decode(*comms[0], a.tq, a.cache.cache, a.tbt, a.tlens, a.tout, a.tlse, o, {ws.data(), ws.size()}); },
        [&] { return std::make_tuple(decode_memory(a), ws); }, fragments);
  };
  expect([](DecodeArgs& a, std::vector<uint8_t>&) { a.tout.data = a.q.data(); },
         {"out: bf16[2, 2, 4, 512]", "shares memory with input q_local ("});
  expect([](DecodeArgs& a, std::vector<uint8_t>& ws) { a.tlse.data = ws.data() + 256; },
         {"lse: f32[2, 2, 4]", "shares memory with output workspace ("});
  expect(
      [](DecodeArgs& a, std::vector<uint8_t>& ws) {
        std::memcpy(ws.data() + 1024, a.table.data(), a.table.size() * 4);
        a.tbt.data = ws.data() + 1024;
      },
      {"workspace: ", "shares memory with input block_table ("});
}

TEST(ValidateDcp, GatherContextRejectsOutputOverlappingInputsOrTheWorkspace) {
  auto comms = make_cpu_group(1);
  OwnedCache cache(CacheFormat::fp8, 2, 16);
  std::vector<int32_t> cu{0, 4}, starts{0}, table{1};
  std::vector<uint16_t> out(4 * kHeadDim, 0x4242);
  std::vector<uint8_t> ws(dcp::gather_context_workspace_size(cache.cache.desc, 4, 1, 1, 1));
  ASSERT_GE(ws.size(), out.size() * 2);  // room for out inside it below
  Tensor tcu(cu.data(), DType::i32, {2}), tstarts(starts.data(), DType::i32, {1}), tbt(table.data(), DType::i32, {1, 1});
  Tensor tout(out.data(), DType::bf16, {4, kHeadDim});
  auto run = [&] { dcp::gather_context(*comms[0], cache.cache, tbt, tcu, tstarts, tout, 1, {ws.data(), ws.size()}); };
  auto memory = [&] { return std::make_tuple(cache.bytes, cu, starts, table, out, ws); };
  EXPECT_NO_THROW(run());
  tout.data = cache.bytes.data() + 1000;
  expect_rejected_unchanged(run, memory, {"out: bf16[4, 576]", "shares memory with input cache ("});
  tout.data = ws.data();
  expect_rejected_unchanged(run, memory, {"out: ", "shares memory with output workspace ("});
  tout.data = out.data();
  std::memcpy(out.data() + 8, starts.data(), 4);
  tstarts.data = out.data() + 8;
  expect_rejected_unchanged(run, memory, {"out: ", "shares memory with input seq_starts ("});
  tstarts.data = starts.data();
  const float scale = 0.02f;
  std::memcpy(out.data() + 8, &scale, 4);
  cache.cache.scale = reinterpret_cast<const float*>(out.data() + 8);  // fp8: the scale is read
  expect_rejected_unchanged(run, memory, {"out: ", "shares memory with input cache.scale ("});
}

TEST(ValidateDcp, SlotMappingRejectsOutputOverlappingItsInputs) {
  std::vector<int64_t> pos{0, 1};
  std::vector<int32_t> req{0, 0}, table{0, 0, 0, 0};
  const Tensor tp(pos.data(), DType::i64, {2}), tr(req.data(), DType::i32, {2}), tbt(table.data(), DType::i32, {1, 1});
  auto memory = [&] { return std::make_tuple(pos, req, table); };
  // Not in place either: slots over the positions they are computed from.
  expect_rejected_unchanged([&] { dcp::slot_mapping(tp, tr, tbt, 4, {1, 0, 1}, tp); }, memory,
                            {"slot_mapping: i64[2]", "shares memory with input positions ("});
  expect_rejected_unchanged(
      [&] { dcp::slot_mapping(tp, tr, tbt, 4, {1, 0, 1}, Tensor(table.data(), DType::i64, {2})); }, memory,
      {"slot_mapping: ", "shares memory with input block_table ("});
  expect_rejected_unchanged(
      [&] { dcp::slot_mapping(tp, tr, tbt, 4, {1, 0, 1}, Tensor(table.data(), DType::i64, {2}, {0})); }, memory,
      {"slot_mapping: stride 0 of dimension 0", "makes elements share memory"});
}

// The size query checks its CacheDesc with the op's own check (and the interleave against its
// block_size, as the op does): it answers no size for a call that gather_context would reject.
TEST(ValidateDcp, GatherContextWorkspaceSizeValidatesTheCacheDescLikeTheOp) {
  const CacheDesc ok{CacheFormat::fp8_ds_mla, 10, 64, 0};
  EXPECT_GT(dcp::gather_context_workspace_size(ok, 100, 2, 2, 4), 0u);
  auto expect = [](const CacheDesc& d, int interleave, const std::string& needle) {
    try {
      dcp::gather_context_workspace_size(d, 100, 2, 2, interleave);
      ADD_FAILURE() << "answered a size; expected an error mentioning " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  CacheDesc d = ok;
  d.format = static_cast<CacheFormat>(9);
  expect(d, 1, "desc.format: unknown format code 9");
  d = ok, d.block_size = 0;
  expect(d, 1, "desc.block_size: 0, expected >= 1");
  d = ok, d.num_blocks = -1;
  expect(d, 1, "desc.num_blocks: -1, expected >= 0");
  d = ok, d.block_stride = 100;
  expect(d, 1, "desc.block_stride: 100 bytes, expected 0 (natural) or >= 41984");
  d = ok, d.block_stride = 41986;
  expect(d, 1, "desc.block_stride: 41986 bytes, expected a multiple of 4");
  d = ok, d.num_blocks = int64_t{1} << 62;
  expect(d, 1, "desc.num_blocks: 4611686018427387904 blocks of 41984 bytes overflow");
  expect(ok, 3, "shard.interleave: 3, expected a divisor of the cache block_size 64");
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
