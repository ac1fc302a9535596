// Ops 4-5 (DeepSeek-V4 cache) on the CPU reference, pinned to vLLM's kernels by vectors/dsv4.
#include <cstring>

#include "cache_test_util.hpp"
#include "cpu/cache_codec.hpp"

namespace mlakv::test {
namespace {

constexpr int kBs = 64;
constexpr int64_t kVllmStride = 37440;
constexpr int64_t kMaxRows = 73;
constexpr int64_t kOffset = 5;

struct Dsv4Vectors {
  std::vector<uint16_t> k = read_raw<uint16_t>("vectors/dsv4/k.bf16");
  std::vector<int64_t> slots = read_raw<int64_t>("vectors/dsv4/slot_mapping.i64");
  std::vector<uint8_t> cache = read_raw<uint8_t>("vectors/dsv4/cache.u8");
  std::vector<int32_t> block_table = read_raw<int32_t>("vectors/dsv4/block_table.i32");
  std::vector<int32_t> seq_lens = read_raw<int32_t>("vectors/dsv4/seq_lens.i32");
  std::vector<int32_t> gather_lens = read_raw<int32_t>("vectors/dsv4/gather_lens.i32");
  std::vector<uint16_t> out = read_raw<uint16_t>("vectors/dsv4/out.bf16");

  int64_t tokens() const { return static_cast<int64_t>(slots.size()); }
  int64_t num_blocks() const { return static_cast<int64_t>(cache.size()) / kVllmStride; }
  int64_t reqs() const { return static_cast<int64_t>(seq_lens.size()); }
  Tensor k_t() { return Tensor(k.data(), DType::bf16, {tokens(), 512}); }
  Tensor bt() { return Tensor(block_table.data(), DType::i32, {reqs(), static_cast<int64_t>(block_table.size()) / reqs()}); }
};

uint16_t poison_bf16() { return num::f32_to_bf16(-12345.0f); }

TEST(Dsv4, WriteFromPoisonedCacheReproducesVllmBytes) {
  Dsv4Vectors v;
  ASSERT_EQ(v.num_blocks(), 11);
  HostCache hc(CacheFormat::dsv4, v.num_blocks(), kBs, kVllmStride, 0xAB);
  dsv4_write(v.k_t(), vec_i64(v.slots), hc.cache);
  ASSERT_EQ(hc.bytes.size(), v.cache.size());
  int64_t first_diff = -1;
  for (std::size_t i = 0; i < v.cache.size() && first_diff < 0; ++i)
    if (hc.bytes[i] != v.cache[i]) first_diff = static_cast<int64_t>(i);
  EXPECT_EQ(first_diff, -1) << "block " << first_diff / kVllmStride << " byte " << first_diff % kVllmStride;
}

TEST(Dsv4, NaturalStrideFor64TokenBlocksIsVllms37440) {
  CacheDesc d{CacheFormat::dsv4, 1, kBs, 0};
  EXPECT_EQ(d.stride_bytes(), kVllmStride);
  EXPECT_EQ(d.dense_block_bytes(), 64 * 584);
}

TEST(Dsv4, DequantGatherWithOffset5ReproducesVllmOutputBitForBit) {
  Dsv4Vectors v;
  HostCache hc(CacheFormat::dsv4, v.num_blocks(), kBs, kVllmStride);
  hc.bytes = v.cache;
  hc.cache.data = hc.bytes.data();
  std::vector<uint16_t> out(v.reqs() * kMaxRows * 512, poison_bf16());
  ASSERT_EQ(out.size(), v.out.size());
  dsv4_dequant_gather(hc.cache, v.bt(), vec_i32(v.seq_lens), Tensor(out.data(), DType::bf16, {v.reqs(), kMaxRows, 512}),
                      vec_i32(v.gather_lens), kOffset);
  for (int64_t r = 0; r < v.reqs(); ++r)
    for (int64_t row = 0; row < kMaxRows; ++row) {
      const int64_t o = (r * kMaxRows + row) * 512;
      ASSERT_EQ(0, std::memcmp(out.data() + o, v.out.data() + o, 1024)) << "request " << r << " row " << row;
    }
}

// Without gather_lens every token is gathered from row `offset`; the rows that vLLM also gathered
// (the last gather_len) must agree with its output.
TEST(Dsv4, DequantGatherWithoutGatherLensTakesWholeSequences) {
  Dsv4Vectors v;
  HostCache hc(CacheFormat::dsv4, v.num_blocks(), kBs, kVllmStride);
  hc.bytes = v.cache;
  hc.cache.data = hc.bytes.data();
  int64_t rows = 0;
  for (int32_t l : v.seq_lens) rows = std::max<int64_t>(rows, l + 2);
  std::vector<uint16_t> out(v.reqs() * rows * 512, poison_bf16());
  dsv4_dequant_gather(hc.cache, v.bt(), vec_i32(v.seq_lens), Tensor(out.data(), DType::bf16, {v.reqs(), rows, 512}),
                      std::nullopt, 2);
  for (int64_t r = 0; r < v.reqs(); ++r) {
    const int64_t len = v.seq_lens[r], g = v.gather_lens[r];
    for (int64_t i = 0; i < g; ++i)
      ASSERT_EQ(0, std::memcmp(out.data() + (r * rows + 2 + len - g + i) * 512,
                               v.out.data() + (r * kMaxRows + kOffset + i) * 512, 1024))
          << "request " << r << " position " << len - g + i;
    for (int64_t row : {int64_t{0}, int64_t{1}})
      EXPECT_EQ(out[(r * rows + row) * 512], poison_bf16()) << "rows before offset untouched";
    if (2 + len < rows) EXPECT_EQ(out[(r * rows + 2 + len) * 512], poison_bf16()) << "rows after untouched";
  }
}

// Re-lays the vLLM cache into another block stride: each block's first 584·64 bytes move as is.
TEST(Dsv4, OtherBlockStridesWriteAndGatherTheSameTokens) {
  Dsv4Vectors v;
  for (int64_t stride : {int64_t{64 * 584}, int64_t{40000}}) {
    HostCache hc(CacheFormat::dsv4, v.num_blocks(), kBs, stride, 0xAB);
    dsv4_write(v.k_t(), vec_i64(v.slots), hc.cache);
    for (int64_t b = 0; b < v.num_blocks(); ++b) {
      EXPECT_EQ(0, std::memcmp(hc.block(b), v.cache.data() + b * kVllmStride, 64 * 584)) << "stride " << stride;
      EXPECT_TRUE(std::all_of(hc.block(b) + 64 * 584, hc.block(b) + stride, [](uint8_t x) { return x == 0xAB; }));
    }
    std::vector<uint16_t> out(v.reqs() * kMaxRows * 512, poison_bf16());
    dsv4_dequant_gather(hc.cache, v.bt(), vec_i32(v.seq_lens),
                        Tensor(out.data(), DType::bf16, {v.reqs(), kMaxRows, 512}), vec_i32(v.gather_lens), kOffset);
    EXPECT_EQ(out, v.out) << "stride " << stride;
  }
}

TEST(Dsv4, OutputRowAndRequestStridesAreHonoured) {
  Dsv4Vectors v;
  HostCache hc(CacheFormat::dsv4, v.num_blocks(), kBs, kVllmStride);
  hc.bytes = v.cache;
  hc.cache.data = hc.bytes.data();
  // Rows 520 elements apart, requests 80 rows apart.
  const int64_t rs = 520, qs = 80 * rs;
  std::vector<uint16_t> out(v.reqs() * qs, poison_bf16());
  dsv4_dequant_gather(hc.cache, v.bt(), vec_i32(v.seq_lens),
                      Tensor(out.data(), DType::bf16, {v.reqs(), kMaxRows, 512}, {qs, rs, 1}), vec_i32(v.gather_lens),
                      kOffset);
  for (int64_t r = 0; r < v.reqs(); ++r)
    for (int64_t row = 0; row < kMaxRows; ++row) {
      ASSERT_EQ(0, std::memcmp(out.data() + r * qs + row * rs, v.out.data() + (r * kMaxRows + row) * 512, 1024))
          << "request " << r << " row " << row;
      ASSERT_EQ(out[r * qs + row * rs + 512], poison_bf16()) << "row tail untouched";
    }
}

// The raw gather packs a dsv4 token as its 576 data bytes then its 8 scale bytes; decoding that
// packed form gives what the dequantizing gather gives.
TEST(Dsv4, RawGatherPacksDataThenScalesAndDecodesLikeTheDequantGather) {
  Dsv4Vectors v;
  HostCache hc(CacheFormat::dsv4, v.num_blocks(), kBs, kVllmStride);
  hc.bytes = v.cache;
  hc.cache.data = hc.bytes.data();
  const int64_t n = 70;  // spans two blocks, written and poisoned slots alike
  std::vector<int32_t> bt = {7, 2}, cu = {0, static_cast<int32_t>(n)};
  std::vector<uint8_t> packed(n * 584);
  gather_cache(hc.cache, Tensor(bt.data(), DType::i32, {1, 2}), vec_i32(cu), Tensor(packed.data(), DType::u8, {n, 584}));
  std::vector<float> deq(n * 512);
  gather_dequant_cache(hc.cache, Tensor(bt.data(), DType::i32, {1, 2}), vec_i32(cu),
                       Tensor(deq.data(), DType::f32, {n, 512}));
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* block = v.cache.data() + bt[i / kBs] * kVllmStride;
    ASSERT_EQ(0, std::memcmp(packed.data() + i * 584, block + (i % kBs) * 576, 576)) << "token " << i;
    ASSERT_EQ(0, std::memcmp(packed.data() + i * 584 + 576, block + 64 * 576 + (i % kBs) * 8, 8)) << "token " << i;
    float row[576];
    cpu::codec::decode_packed_token(CacheFormat::dsv4, packed.data() + i * 584, 1.0f, row);
    ASSERT_EQ(0, std::memcmp(row, deq.data() + i * 512, 512 * 4)) << "token " << i;
  }
}

TEST(Dsv4, ScaleBytesAreBiasedExponentsWithAZeroPadByte) {
  HostCache hc(CacheFormat::dsv4, 1, 4, 0, 0xAB);
  std::vector<float> row(512, 0.0f);
  // Group g has amax 448 · 2^(g - 3): exponent g - 3 exactly; group 6 is all zero (floor 1e-4).
  for (int g = 0; g < 6; ++g) row[64 * g + 5] = std::ldexp(448.0f, g - 3);
  std::vector<uint16_t> k(512);
  for (int i = 0; i < 512; ++i) k[i] = num::f32_to_bf16(row[i]);
  std::vector<int64_t> slots = {2};
  dsv4_write(Tensor(k.data(), DType::bf16, {1, 512}), vec_i64(slots), hc.cache);
  const uint8_t* sc = hc.bytes.data() + 4 * 576 + 8 * 2;
  for (int g = 0; g < 6; ++g) EXPECT_EQ(sc[g], 127 + g - 3) << "group " << g;
  EXPECT_EQ(sc[6], 127 + num::ue8m0_exponent(0.0f));
  EXPECT_EQ(sc[7], 0) << "pad byte";
  EXPECT_EQ(hc.bytes[2 * 576 + 5], 0x7e) << "amax maps to 448 exactly";
  EXPECT_EQ(hc.bytes[4 * 576 + 8 * 1], 0xAB) << "other tokens' scales untouched";
}

TEST(Dsv4, SmallBlockSizesRoundTripWithinBudget) {
  for (int bs : {1, 16}) {
    const int64_t t = 40, nb = (t + bs - 1) / bs;
    HostCache hc(CacheFormat::dsv4, nb, bs);
    auto k = random_bf16(t * 512);
    std::vector<int64_t> slots(t);
    const auto phys = shuffled_blocks(nb);
    for (int64_t i = 0; i < t; ++i) slots[i] = static_cast<int64_t>(phys[i / bs]) * bs + i % bs;
    dsv4_write(Tensor(k.data(), DType::bf16, {t, 512}), vec_i64(slots), hc.cache);
    std::vector<int32_t> bt(phys.begin(), phys.end()), lens = {static_cast<int32_t>(t)};
    std::vector<uint16_t> out(t * 512);
    dsv4_dequant_gather(hc.cache, Tensor(bt.data(), DType::i32, {1, nb}), vec_i32(lens),
                        Tensor(out.data(), DType::bf16, {1, t, 512}));
    const auto got = bf16_to_f32(out), ref = bf16_to_f32(k);
    EXPECT_LE(rel_err(got, ref), 4e-2) << "bs " << bs;
    for (int64_t i = 0; i < t; ++i)
      EXPECT_EQ(0, std::memcmp(out.data() + i * 512 + 448, k.data() + i * 512 + 448, 128)) << "rope copied, bs " << bs;
  }
}

}  // namespace
}  // namespace mlakv::test
