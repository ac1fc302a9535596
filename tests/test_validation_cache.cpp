// SPEC §5 for ops 1-5: bad input throws mlakv::Error naming the argument, and nothing is written.
#include <cstring>
#include <functional>

#include "cache_test_util.hpp"

namespace mlakv::test {
namespace {

// Runs `op`, which must throw mlakv::Error mentioning every fragment, and checks that `watched`
// (the op's destination) is byte for byte what it was.
void expect_rejected(const std::function<void()>& op, std::initializer_list<const char*> fragments,
                     const std::vector<uint8_t>& watched) {
  const std::vector<uint8_t> before = watched;
  try {
    op();
    ADD_FAILURE() << "no mlakv::Error thrown (expected one mentioning " << *fragments.begin() << ")";
  } catch (const Error& e) {
    for (const char* f : fragments)
      EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << "message \"" << e.what() << "\" lacks \"" << f
                                                                 << "\"";
  }
  EXPECT_TRUE(before == watched) << "destination modified by a rejected call";
}

// A valid write_cache call whose pieces each test breaks one at a time.
struct WriteCall {
  HostCache hc;
  std::vector<uint16_t> kv = random_bf16(4 * 512), pe = random_bf16(4 * 64);
  std::vector<int64_t> slots = {0, 5, -1, 9};
  Tensor kv_c = Tensor(kv.data(), DType::bf16, {4, 512});
  Tensor k_pe = Tensor(pe.data(), DType::bf16, {4, 64});

  explicit WriteCall(CacheFormat f = CacheFormat::fp8_ds_mla) : hc(f, 2, 8, 0, 0x11) {}
  void run() { write_cache(kv_c, k_pe, vec_i64(slots), hc.cache); }
};

TEST(ValidateWriteCache, ValidCallIsAccepted) {
  WriteCall c;
  EXPECT_NO_THROW(c.run());
}

TEST(ValidateWriteCache, RejectsDsv4CacheFormat) {
  WriteCall c(CacheFormat::dsv4);
  expect_rejected([&] { c.run(); }, {"cache.desc.format", "dsv4", "dsv4_write"}, c.hc.bytes);
}

TEST(ValidateWriteCache, RejectsFp8CacheWithoutScale) {
  WriteCall c(CacheFormat::fp8);
  c.hc.cache.scale = nullptr;
  expect_rejected([&] { c.run(); }, {"cache.scale", "null"}, c.hc.bytes);
}

TEST(ValidateWriteCache, RejectsNonPositiveOrNanFp8Scale) {
  WriteCall c(CacheFormat::fp8);
  c.hc.scale = 0.0f;
  expect_rejected([&] { c.run(); }, {"cache.scale", "0"}, c.hc.bytes);
  c.hc.scale = NAN;
  expect_rejected([&] { c.run(); }, {"cache.scale"}, c.hc.bytes);
}

TEST(ValidateWriteCache, RejectsMisalignedFp8ScalePointer) {
  WriteCall c(CacheFormat::fp8);
  alignas(4) uint8_t raw[8] = {0, 0, 0, 0x80, 0x3f, 0, 0, 0};  // 1.0f at raw + 1
  c.hc.cache.scale = reinterpret_cast<const float*>(raw + 1);
  expect_rejected([&] { c.run(); }, {"cache.scale", "4-byte aligned"}, c.hc.bytes);
}

TEST(ValidateWriteCache, RejectsLatentWidthOtherThan512) {
  WriteCall c;
  c.kv_c = Tensor(c.kv.data(), DType::bf16, {4, 256});
  expect_rejected([&] { c.run(); }, {"kv_c", "256", "512"}, c.hc.bytes);
}

TEST(ValidateWriteCache, RejectsRopeWidthOtherThan64) {
  WriteCall c;
  c.k_pe = Tensor(c.pe.data(), DType::bf16, {4, 32});
  expect_rejected([&] { c.run(); }, {"k_pe", "32", "64"}, c.hc.bytes);
}

TEST(ValidateWriteCache, RejectsF16Inputs) {
  WriteCall c;
  c.kv_c.dtype = DType::f16;
  expect_rejected([&] { c.run(); }, {"kv_c", "f16", "bf16 or f32"}, c.hc.bytes);
}

TEST(ValidateWriteCache, RejectsFewerInputRowsThanSlots) {
  WriteCall c;
  c.k_pe = Tensor(c.pe.data(), DType::bf16, {3, 64});
  expect_rejected([&] { c.run(); }, {"k_pe", "3 rows", "4"}, c.hc.bytes);
}

TEST(ValidateWriteCache, RejectsSlotBeyondCapacity) {
  WriteCall c;
  c.slots[3] = 16;  // 2 blocks x 8
  expect_rejected([&] { c.run(); }, {"slot_mapping[3]", "16", "< 16"}, c.hc.bytes);
}

TEST(ValidateWriteCache, RejectsInt32SlotMapping) {
  WriteCall c;
  std::vector<int32_t> s32 = {0, 1, 2, 3};
  expect_rejected([&] { write_cache(c.kv_c, c.k_pe, vec_i32(s32), c.hc.cache); }, {"slot_mapping", "i32", "i64"},
                  c.hc.bytes);
}

TEST(ValidateWriteCache, RejectsNullInputData) {
  WriteCall c;
  c.kv_c.data = nullptr;
  expect_rejected([&] { c.run(); }, {"kv_c", "null"}, c.hc.bytes);
}

TEST(ValidateWriteCache, RejectsNonContiguousRows) {
  WriteCall c;
  c.kv_c = Tensor(c.kv.data(), DType::bf16, {2, 512}, {1024, 2});
  expect_rejected([&] { c.run(); }, {"kv_c", "stride"}, c.hc.bytes);
}

TEST(ValidateWriteCache, RejectsRowStrideWhoseByteOffsetsOverflowInt64) {
  WriteCall c;  // row 1 of k_pe would sit 2^63 bytes before row 0
  c.k_pe = Tensor(c.pe.data(), DType::bf16, {4, 64}, {-(int64_t{1} << 62), 1});
  expect_rejected([&] { c.run(); }, {"k_pe", "-4611686018427387904", "2^63 bytes"}, c.hc.bytes);
  c.k_pe = Tensor(c.pe.data(), DType::bf16, {4, 64});
  c.kv_c = Tensor(c.kv.data(), DType::bf16, {4, 512}, {int64_t{1} << 61, 1});
  expect_rejected([&] { c.run(); }, {"kv_c", "2^63 bytes"}, c.hc.bytes);
}

// SPEC §5 and the int64 contract: a (broadcast) view whose element count overflows int64 is
// rejected by its element count, before anything counts it.
TEST(ValidateWriteCache, RejectsElementCountBeyondInt64) {
  WriteCall c;
  c.kv_c = Tensor(c.kv.data(), DType::bf16, {int64_t{1} << 62, 512}, {0, 1});
  expect_rejected([&] { c.run(); }, {"kv_c: bf16[4611686018427387904, 512] on cpu has more than 9223372036854775807 elements"},
                  c.hc.bytes);
}

// The writer fills cache blocks in parallel while it reads its inputs: none may lie in the cache.
// Inputs may share memory with each other (kv_c and k_pe are often one [T, 576] buffer).
TEST(ValidateWriteCache, RejectsInputsOverlappingTheCache) {
  WriteCall c;
  std::memcpy(c.hc.bytes.data(), c.kv.data(), c.kv.size() * 2);
  c.kv_c = Tensor(c.hc.bytes.data(), DType::bf16, {4, 512});
  expect_rejected([&] { c.run(); }, {"cache: 10496 bytes on cpu at bytes [", "shares memory with input kv_c (bf16[4, 512]"},
                  c.hc.bytes);
  c.kv_c = Tensor(c.kv.data(), DType::bf16, {4, 512});
  std::memcpy(c.hc.bytes.data() + 5000, c.slots.data(), c.slots.size() * 8);
  const Tensor slots_in_cache(c.hc.bytes.data() + 5000, DType::i64, {4});
  expect_rejected([&] { write_cache(c.kv_c, c.k_pe, slots_in_cache, c.hc.cache); },
                  {"cache: ", "shares memory with input slot_mapping ("}, c.hc.bytes);

  WriteCall f(CacheFormat::fp8);  // the fp8 scale is read while blocks are written
  const float one = 1.0f;
  std::memcpy(f.hc.bytes.data() + 64, &one, 4);
  f.hc.cache.scale = reinterpret_cast<const float*>(f.hc.bytes.data() + 64);
  expect_rejected([&] { f.run(); }, {"cache: ", "shares memory with input cache.scale (4 bytes on cpu"}, f.hc.bytes);

  WriteCall ok;
  std::vector<uint16_t> rows = random_bf16(4 * 576);
  ok.kv_c = Tensor(rows.data(), DType::bf16, {4, 512}, {576, 1});
  ok.k_pe = Tensor(rows.data() + 512, DType::bf16, {4, 64}, {576, 1});
  EXPECT_NO_THROW(ok.run());
}

TEST(ValidateWriteCache, RejectsSlotMappingNotAlignedToInt64) {
  WriteCall c;
  std::vector<int64_t> storage(5, 0);  // four slots 0 at a 4-byte offset
  const Tensor sm(reinterpret_cast<uint8_t*>(storage.data()) + 4, DType::i64, {4});
  expect_rejected([&] { write_cache(c.kv_c, c.k_pe, sm, c.hc.cache); }, {"slot_mapping", "data address", "8-byte aligned"},
                  c.hc.bytes);
}

TEST(ValidateWriteCache, RejectsTensorsOnAnotherDevice) {
  WriteCall c;
  c.k_pe.device = Device::cuda(0);
  expect_rejected([&] { c.run(); }, {"k_pe", "cuda:0", "cpu"}, c.hc.bytes);
}

// Tensor's own counts never wrap: where they overflow int64 they throw, naming the view.
TEST(ValidateTensor, NumelNbytesAndSpanBytesThrowInsteadOfOverflowing) {
  auto expect = [](const std::function<void()>& f, const std::string& needle) {
    try {
      f();
      ADD_FAILURE() << "no mlakv::Error; expected one mentioning " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  const int64_t big = int64_t{1} << 32;
  const Tensor broadcast(nullptr, DType::f32, {big, big}, {0, 0});  // 2^64 elements in 4 bytes
  expect([&] { (void)broadcast.numel(); }, "Tensor::numel: f32[4294967296, 4294967296] on cpu has more than");
  expect([&] { (void)broadcast.nbytes(); }, "Tensor::numel: f32[4294967296, 4294967296]");
  EXPECT_EQ(broadcast.span_bytes(), 4u);
  expect([&] { (void)Tensor(nullptr, DType::f32, {int64_t{1} << 62}, {0}).nbytes(); }, "Tensor::nbytes: f32[4611686018427387904]");
  expect([&] { (void)Tensor(nullptr, DType::f32, {2, 2}, {int64_t{1} << 61, 1}).span_bytes(); }, "Tensor::span_bytes: f32[2, 2]");
  // Contiguous strides of a shape whose count overflows saturate (no wrap): never contiguous.
  const Tensor huge(nullptr, DType::bf16, {big, big, big});
  EXPECT_EQ(huge.stride[0], INT64_MAX);
  EXPECT_FALSE(huge.is_contiguous());
  EXPECT_EQ(Tensor(nullptr, DType::bf16, {0, big, big, big}).numel(), 0);
  EXPECT_EQ(Tensor(nullptr, DType::bf16, {3, 5}).nbytes(), 30u);
}

TEST(ValidateCache, RejectsBlockStrideBelowDenseBlock) {
  WriteCall c;
  c.hc.cache.desc.block_stride = 8 * 656 - 4;
  expect_rejected([&] { c.run(); }, {"cache.desc.block_stride", "5244", "5248"}, c.hc.bytes);
}

TEST(ValidateCache, RejectsZeroBlockSizeAndNegativeBlockCount) {
  WriteCall c;
  c.hc.cache.desc.block_size = 0;
  expect_rejected([&] { c.run(); }, {"cache.desc.block_size", "0"}, c.hc.bytes);
  c.hc.cache.desc.block_size = 8;
  c.hc.cache.desc.num_blocks = -1;
  expect_rejected([&] { c.run(); }, {"cache.desc.num_blocks", "-1"}, c.hc.bytes);
}

TEST(ValidateCache, RejectsBlockCountWhoseByteSizeOverflowsInt64) {
  WriteCall c;  // 5248-byte blocks: 2^62 of them overflow int64 byte offsets (and slot capacity)
  c.hc.cache.desc.num_blocks = int64_t{1} << 62;
  c.slots[3] = int64_t{1} << 61;
  expect_rejected([&] { c.run(); }, {"cache.desc.num_blocks", "4611686018427387904", "overflow"}, c.hc.bytes);
}

TEST(ValidateCache, RejectsNullCacheData) {
  WriteCall c;
  c.hc.cache.data = nullptr;
  expect_rejected([&] { c.run(); }, {"cache.data", "null"}, c.hc.bytes);
}

// A valid gather over a 2-block fp8 cache; tests break one piece.
struct GatherCall {
  HostCache hc{CacheFormat::fp8, 4, 8, 0, 0x22, 0.5f};
  std::vector<int32_t> block_table = {3, 1, 0, 2};  // [2, 2]
  std::vector<int32_t> cu = {0, 5, 12};
  std::vector<int32_t> starts = {3, 9};
  std::vector<uint8_t> dst = std::vector<uint8_t>(12 * 576 * 4, 0x77);
  Tensor bt = Tensor(block_table.data(), DType::i32, {2, 2});
  Tensor dst_t = Tensor(dst.data(), DType::e4m3, {12, 576});
  GatherOptions opts;

  GatherCall() { opts.seq_starts = vec_i32(starts); }
  void raw() { gather_cache(hc.cache, bt, vec_i32(cu), dst_t, opts); }
  void dequant() { gather_dequant_cache(hc.cache, bt, vec_i32(cu), dst_t, opts); }
};

TEST(ValidateGather, ValidCallIsAccepted) {
  GatherCall c;
  EXPECT_NO_THROW(c.raw());
  c.dst_t = Tensor(c.dst.data(), DType::f32, {12, 576});
  EXPECT_NO_THROW(c.dequant());
}

TEST(ValidateGather, RejectsDstTypeOtherThanTheCacheStorage) {
  GatherCall c;
  c.dst_t = Tensor(c.dst.data(), DType::bf16, {12, 576});
  expect_rejected([&] { c.raw(); }, {"dst", "bf16", "fp8 cache", "e4m3 or u8"}, c.dst);
  c.hc.cache.desc.format = CacheFormat::bf16;
  c.dst_t = Tensor(c.dst.data(), DType::f32, {12, 576});
  expect_rejected([&] { c.raw(); }, {"dst", "f32", "bf16 cache"}, c.dst);
}

TEST(ValidateGather, RejectsDstWidthOtherThanTokenBytes) {
  GatherCall c;
  c.hc.cache.desc.format = CacheFormat::fp8_ds_mla;
  c.dst_t = Tensor(c.dst.data(), DType::u8, {12, 576});
  expect_rejected([&] { c.raw(); }, {"dst", "576", "656"}, c.dst);
}

TEST(ValidateGather, RejectsBlockIdOutOfRangeInAUsedEntry) {
  GatherCall c;
  c.block_table[3] = 4;
  expect_rejected([&] { c.raw(); }, {"block_table[1][1]", "4", "[0, 4)"}, c.dst);
}

TEST(ValidateGather, IgnoresBlockIdsBeyondTheGatheredRange) {
  GatherCall c;
  c.starts[0] = 0;
  c.starts[1] = 0;
  c.block_table[1] = 1000000;  // sequence 0 uses only its first block
  EXPECT_NO_THROW(c.raw());
}

TEST(ValidateGather, AcceptsBlockTableWhoseRowCapacityOverflowsInt64) {
  GatherCall c;  // rows of 2^60 entries (only the used ones exist) x 8 tokens: more than INT64_MAX tokens
  // Such rows reach 2^62 bytes above the first entry: put the entries after dst's bytes, so that
  // the table lies above the output and shares no memory with it.
  uint8_t* entries = c.dst.data() + 12 * 576;
  std::memcpy(entries, c.block_table.data(), c.block_table.size() * 4);
  c.bt = Tensor(entries, DType::i32, {2, int64_t{1} << 60}, {2, 1});
  EXPECT_NO_THROW(c.raw());
  const int32_t bad = 4;  // the used entries are still checked
  std::memcpy(entries + 3 * 4, &bad, 4);
  expect_rejected([&] { c.raw(); }, {"block_table[1][1]", "4", "[0, 4)"}, c.dst);
}

TEST(ValidateGather, RejectsRangeBeyondBlockTableCapacity) {
  GatherCall c;
  c.starts[1] = 10;  // 10 + 7 > 2 blocks x 8
  expect_rejected([&] { c.raw(); }, {"request 1", "17", "16"}, c.dst);
}

TEST(ValidateGather, RejectsDecreasingCuSeqLens) {
  GatherCall c;
  c.cu = {0, 6, 5};
  expect_rejected([&] { c.raw(); }, {"cu_seq_lens[2]", "5", "non-decreasing"}, c.dst);
}

TEST(ValidateGather, RejectsMoreRowsThanDstHolds) {
  GatherCall c;
  c.dst_t = Tensor(c.dst.data(), DType::e4m3, {10, 576});
  expect_rejected([&] { c.raw(); }, {"cu_seq_lens[2]", "12", "10 rows"}, c.dst);
}

TEST(ValidateGather, RejectsNegativeSeqStart) {
  GatherCall c;
  c.starts[0] = -1;
  expect_rejected([&] { c.raw(); }, {"seq_starts[0]", "-1", ">= 0"}, c.dst);
}

TEST(ValidateGather, RejectsTokenToSeqThatContradictsCuSeqLens) {
  GatherCall c;
  std::vector<int32_t> t2s = {0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1};  // row 5 belongs to sequence 1
  c.opts.token_to_seq = vec_i32(t2s);
  expect_rejected([&] { c.raw(); }, {"token_to_seq[5]", "expected 1"}, c.dst);
  std::vector<int32_t> short_map = {0, 0};
  c.opts.token_to_seq = vec_i32(short_map);
  expect_rejected([&] { c.raw(); }, {"token_to_seq", "2", "12"}, c.dst);
}

TEST(ValidateGather, RejectsBlockTableRowsOtherThanBatch) {
  GatherCall c;
  c.bt = Tensor(c.block_table.data(), DType::i32, {1, 4});
  expect_rejected([&] { c.raw(); }, {"block_table", "1", "expected 2"}, c.dst);
}

TEST(ValidateGather, RejectsOverlappingDstRows) {
  GatherCall c;
  c.dst_t = Tensor(c.dst.data(), DType::e4m3, {12, 576}, {100, 1});
  expect_rejected([&] { c.raw(); }, {"dst", "stride 100", "576"}, c.dst);
}

// dst is written in parallel while the cache, the block table, the lengths, the options' index
// tensors and the fp8 scale are read: it may share memory with none of them.
TEST(ValidateGather, RejectsDstOverlappingItsInputs) {
  GatherCall c;
  c.dst_t = Tensor(c.hc.bytes.data() + 1024, DType::e4m3, {12, 576});
  expect_rejected([&] { c.raw(); }, {"dst: e4m3[12, 576]", "shares memory with input cache (18432 bytes on cpu"},
                  c.hc.bytes);
  c.dst_t = Tensor(c.dst.data(), DType::e4m3, {12, 576});
  std::memcpy(c.dst.data() + 64, c.block_table.data(), c.block_table.size() * 4);
  c.bt = Tensor(c.dst.data() + 64, DType::i32, {2, 2});
  expect_rejected([&] { c.raw(); }, {"dst: ", "shares memory with input block_table ("}, c.dst);
  c.bt = Tensor(c.block_table.data(), DType::i32, {2, 2});
  std::memcpy(c.dst.data() + 128, c.starts.data(), c.starts.size() * 4);
  c.opts.seq_starts = Tensor(c.dst.data() + 128, DType::i32, {2});
  expect_rejected([&] { c.raw(); }, {"dst: ", "shares memory with input seq_starts ("}, c.dst);
  c.opts.seq_starts = vec_i32(c.starts);
  std::vector<int32_t> t2s = {0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1};
  std::memcpy(c.dst.data() + 256, t2s.data(), t2s.size() * 4);
  c.opts.token_to_seq = Tensor(c.dst.data() + 256, DType::i32, {12});
  expect_rejected([&] { c.raw(); }, {"dst: ", "shares memory with input token_to_seq ("}, c.dst);
  c.opts.token_to_seq.reset();

  c.dst_t = Tensor(c.dst.data(), DType::f32, {12, 576});  // dequantizing fp8 reads the scale
  const float half = 0.5f;
  std::memcpy(c.dst.data() + 4000, &half, 4);
  c.hc.cache.scale = reinterpret_cast<const float*>(c.dst.data() + 4000);
  expect_rejected([&] { c.dequant(); }, {"dst: f32[12, 576]", "shares memory with input cache.scale ("}, c.dst);
}

TEST(ValidateGatherDequant, RejectsByteDstAndWrongRowWidth) {
  GatherCall c;
  c.dst_t = Tensor(c.dst.data(), DType::u8, {12, 576});
  expect_rejected([&] { c.dequant(); }, {"dst", "u8", "bf16 or f32"}, c.dst);
  c.dst_t = Tensor(c.dst.data(), DType::f32, {12, 512});
  expect_rejected([&] { c.dequant(); }, {"dst", "512", "576"}, c.dst);
}

TEST(ValidateDsv4Write, RejectsNonDsv4CacheAndWrongKWidth) {
  HostCache hc(CacheFormat::bf16, 1, 4, 0, 0x44);
  auto k = random_bf16(2 * 576);
  std::vector<int64_t> slots = {0, 1};
  expect_rejected([&] { dsv4_write(Tensor(k.data(), DType::bf16, {2, 512}), vec_i64(slots), hc.cache); },
                  {"cache.desc.format", "bf16", "dsv4"}, hc.bytes);
  HostCache v4(CacheFormat::dsv4, 1, 4, 0, 0x44);
  expect_rejected([&] { dsv4_write(Tensor(k.data(), DType::bf16, {2, 576}), vec_i64(slots), v4.cache); },
                  {"k", "576", "512"}, v4.bytes);
  expect_rejected([&] { dsv4_write(Tensor(k.data(), DType::f32, {1, 512}), vec_i64(slots), v4.cache); },
                  {"k", "f32", "bf16"}, v4.bytes);
}

TEST(ValidateDsv4Write, RejectsSlotBeyondCapacity) {
  HostCache hc(CacheFormat::dsv4, 1, 4, 0, 0x44);
  auto k = random_bf16(2 * 512);
  std::vector<int64_t> slots = {0, 4};
  expect_rejected([&] { dsv4_write(Tensor(k.data(), DType::bf16, {2, 512}), vec_i64(slots), hc.cache); },
                  {"slot_mapping[1]", "4", "< 4"}, hc.bytes);
}

TEST(ValidateDsv4Write, RejectsInputsOverlappingTheCache) {
  HostCache hc(CacheFormat::dsv4, 1, 4, 0, 0x44);
  auto k = random_bf16(2 * 512);
  std::memcpy(hc.bytes.data(), k.data(), k.size() * 2);
  std::vector<int64_t> slots = {0, 1};
  expect_rejected([&] { dsv4_write(Tensor(hc.bytes.data(), DType::bf16, {2, 512}), vec_i64(slots), hc.cache); },
                  {"cache: 2880 bytes on cpu", "shares memory with input k (bf16[2, 512]"}, hc.bytes);
  std::memcpy(hc.bytes.data() + 2048, slots.data(), 16);
  expect_rejected(
      [&] { dsv4_write(Tensor(k.data(), DType::bf16, {2, 512}), Tensor(hc.bytes.data() + 2048, DType::i64, {2}), hc.cache); },
      {"cache: ", "shares memory with input slot_mapping ("}, hc.bytes);
}

// A valid dsv4 gather: 2 requests over a 3-block cache of 4-token blocks, max_rows 6; request 1
// gathers only from its second block, so its first entry may hold garbage.
struct Dsv4GatherCall {
  HostCache hc{CacheFormat::dsv4, 3, 4, 0, 0x55};
  std::vector<int32_t> block_table = {2, 0, 1000000, 1};  // [2, 2]
  std::vector<int32_t> seq_lens = {7, 7};
  std::vector<int32_t> gather_lens = {4, 3};
  std::vector<uint8_t> out = std::vector<uint8_t>(2 * 6 * 512 * 2, 0x66);
  Tensor bt = Tensor(block_table.data(), DType::i32, {2, 2});
  Tensor out_t = Tensor(out.data(), DType::bf16, {2, 6, 512});
  int64_t offset = 2;

  void run(bool with_gather_lens = true) {
    dsv4_dequant_gather(hc.cache, bt, vec_i32(seq_lens), out_t,
                        with_gather_lens ? std::optional<Tensor>(vec_i32(gather_lens)) : std::nullopt, offset);
  }
};

TEST(ValidateDsv4Gather, ValidCallIgnoresUnusedBlockTableEntries) {
  Dsv4GatherCall c;
  EXPECT_NO_THROW(c.run());
}

TEST(ValidateDsv4Gather, RejectsOffsetPlusGatherLenBeyondMaxRows) {
  Dsv4GatherCall c;
  c.offset = 3;  // 3 + 4 > 6
  expect_rejected([&] { c.run(); }, {"gather_lens[0]", "7", "max_rows = 6"}, c.out);
  c.offset = 0;
  expect_rejected([&] { c.run(false); }, {"seq_lens[0]", "7", "max_rows = 6"}, c.out);
}

TEST(ValidateDsv4Gather, RejectsGatherLenAboveSeqLenAndNegativeLengths) {
  Dsv4GatherCall c;
  c.gather_lens[1] = 8;
  expect_rejected([&] { c.run(); }, {"gather_lens[1]", "8", "[0, seq_lens[1] = 7]"}, c.out);
  c.gather_lens[1] = 0;
  c.seq_lens[1] = -2;
  expect_rejected([&] { c.run(); }, {"seq_lens[1]", "-2", ">= 0"}, c.out);
}

TEST(ValidateDsv4Gather, RejectsNegativeOffset) {
  Dsv4GatherCall c;
  c.offset = -1;
  expect_rejected([&] { c.run(); }, {"offset", "-1"}, c.out);
}

TEST(ValidateDsv4Gather, RejectsBlockIdOutOfRangeAndSeqLenBeyondCapacity) {
  Dsv4GatherCall c;
  c.block_table[0] = 3;
  expect_rejected([&] { c.run(); }, {"block_table[0][0]", "3", "[0, 3)"}, c.out);
  c.block_table[0] = 2;
  c.seq_lens[0] = 9;  // 2 blocks x 4 = 8
  expect_rejected([&] { c.run(); }, {"seq_lens[0]", "9", "capacity"}, c.out);
}

TEST(ValidateDsv4Gather, RejectsWrongOutputTypeWidthAndCacheFormat) {
  Dsv4GatherCall c;
  c.out_t = Tensor(c.out.data(), DType::f32, {2, 6, 256});
  expect_rejected([&] { c.run(); }, {"out", "f32", "bf16"}, c.out);
  c.out_t = Tensor(c.out.data(), DType::bf16, {2, 3, 1024});
  expect_rejected([&] { c.run(); }, {"out", "1024", "512"}, c.out);
  c.out_t = Tensor(c.out.data(), DType::bf16, {2, 6, 512});
  c.hc.cache.desc.format = CacheFormat::fp8;
  expect_rejected([&] { c.run(); }, {"cache.desc.format", "fp8", "dsv4"}, c.out);
}

// out is written in parallel while the cache, the block table and the lengths are read.
TEST(ValidateDsv4Gather, RejectsOutOverlappingItsInputs) {
  Dsv4GatherCall c;
  c.out_t = Tensor(c.hc.bytes.data(), DType::bf16, {2, 2, 512});
  c.offset = 0;
  expect_rejected([&] { c.run(); }, {"out: bf16[2, 2, 512]", "shares memory with input cache (8640 bytes on cpu"},
                  c.hc.bytes);
  Dsv4GatherCall g;
  std::memcpy(g.out.data() + 64, g.gather_lens.data(), g.gather_lens.size() * 4);
  expect_rejected(
      [&] {
        dsv4_dequant_gather(g.hc.cache, g.bt, vec_i32(g.seq_lens), g.out_t, Tensor(g.out.data() + 64, DType::i32, {2}),
                            g.offset);
      },
      {"out: ", "shares memory with input gather_lens ("}, g.out);
  std::memcpy(g.out.data() + 128, g.block_table.data(), g.block_table.size() * 4);
  g.bt = Tensor(g.out.data() + 128, DType::i32, {2, 2});
  expect_rejected([&] { g.run(); }, {"out: ", "shares memory with input block_table ("}, g.out);
}

}  // namespace
}  // namespace mlakv::test
