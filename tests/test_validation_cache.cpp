// SPEC §5 for ops 1-5: bad input throws mlakv::Error naming the argument, and nothing is written.
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
  c.bt = Tensor(c.block_table.data(), DType::i32, {2, int64_t{1} << 60}, {2, 1});
  EXPECT_NO_THROW(c.raw());
  c.block_table[3] = 4;  // the used entries are still checked
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

}  // namespace
}  // namespace mlakv::test
