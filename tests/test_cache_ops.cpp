// Ops 1-3 on the CPU reference: write_cache, gather_cache, gather_dequant_cache.
#include <cfloat>
#include <cstring>
#include <tuple>

#include "cache_test_util.hpp"

namespace mlakv::test {
namespace {

// The stored bytes of one token, computed here straight from SPEC §2 (independently of the
// library's codec) so that the write path is checked against the contract, not against itself.
std::vector<uint8_t> expected_token(CacheFormat f, const float* latent, const float* rope, float scale) {
  std::vector<uint8_t> out;
  auto put_bf16 = [&](float x) {
    const uint16_t b = num::f32_to_bf16(x);
    out.push_back(static_cast<uint8_t>(b & 0xff));
    out.push_back(static_cast<uint8_t>(b >> 8));
  };
  if (f == CacheFormat::bf16) {
    for (int i = 0; i < 512; ++i) put_bf16(latent[i]);
    for (int i = 0; i < 64; ++i) put_bf16(rope[i]);
  } else if (f == CacheFormat::fp8) {
    for (int i = 0; i < 512; ++i) out.push_back(num::f32_to_e4m3(latent[i] / scale));
    for (int i = 0; i < 64; ++i) out.push_back(num::f32_to_e4m3(rope[i] / scale));
  } else {
    float s[4];
    for (int t = 0; t < 4; ++t) {
      float amax = 0;
      for (int i = 0; i < 128; ++i) amax = std::max(amax, std::fabs(latent[128 * t + i]));
      s[t] = std::max(amax / 448.0f, FLT_MIN);
      for (int i = 0; i < 128; ++i) out.push_back(num::f32_to_e4m3(latent[128 * t + i] / s[t]));
    }
    const auto* sb = reinterpret_cast<const uint8_t*>(s);
    out.insert(out.end(), sb, sb + 16);
    for (int i = 0; i < 64; ++i) put_bf16(rope[i]);
  }
  return out;
}

// Sequences laid out in a paged cache: each owns ceil((start + len) / bs) shuffled blocks.
struct Paged {
  int block_size;
  int64_t max_blocks = 0, num_blocks = 0;
  std::vector<int32_t> lens, starts, cu, block_table;

  Paged(int bs, std::vector<int32_t> seq_lens, std::vector<int32_t> seq_starts)
      : block_size(bs), lens(std::move(seq_lens)), starts(std::move(seq_starts)) {
    cu.push_back(0);
    for (std::size_t b = 0; b < lens.size(); ++b) {
      cu.push_back(cu.back() + lens[b]);
      max_blocks = std::max<int64_t>(max_blocks, (starts[b] + lens[b] + bs - 1) / bs);
    }
    max_blocks = std::max<int64_t>(max_blocks, 1);
    num_blocks = max_blocks * static_cast<int64_t>(lens.size()) + 3;  // a few never used
    const auto phys = shuffled_blocks(num_blocks);
    block_table.resize(lens.size() * max_blocks);
    for (std::size_t i = 0; i < block_table.size(); ++i) block_table[i] = phys[i];
  }
  int64_t batch() const { return static_cast<int64_t>(lens.size()); }
  int64_t rows() const { return cu.back(); }
  int64_t slot(int64_t b, int64_t pos) const {
    return static_cast<int64_t>(block_table[b * max_blocks + pos / block_size]) * block_size + pos % block_size;
  }
  Tensor bt() { return Tensor(block_table.data(), DType::i32, {batch(), max_blocks}); }
  Tensor cu_t() { return vec_i32(cu); }
  Tensor starts_t() { return vec_i32(starts); }
};

// Every position [0, start + len) of every sequence, written in one call from N(0,1) bf16 rows.
struct Written {
  std::vector<uint16_t> kv_c, k_pe;
  std::vector<int64_t> slots;
  std::vector<std::vector<int64_t>> token_of;  // [b][pos] -> input row

  Written(Paged& p, HostCache& hc) {
    for (int64_t b = 0; b < p.batch(); ++b) {
      token_of.emplace_back();
      for (int64_t pos = 0; pos < p.starts[b] + p.lens[b]; ++pos) {
        token_of.back().push_back(static_cast<int64_t>(slots.size()));
        slots.push_back(p.slot(b, pos));
      }
    }
    const auto t = static_cast<int64_t>(slots.size());
    kv_c = random_bf16(t * 512);
    k_pe = random_bf16(t * 64);
    write_cache(Tensor(kv_c.data(), DType::bf16, {t, 512}), Tensor(k_pe.data(), DType::bf16, {t, 64}),
                vec_i64(slots), hc.cache);
  }
  std::vector<uint8_t> expected(CacheFormat f, int64_t row, float scale) const {
    const auto lat = bf16_to_f32({kv_c.begin() + row * 512, kv_c.begin() + (row + 1) * 512});
    const auto rope = bf16_to_f32({k_pe.begin() + row * 64, k_pe.begin() + (row + 1) * 64});
    return expected_token(f, lat.data(), rope.data(), scale);
  }
};

using RoundTripParam = std::tuple<CacheFormat, int>;

class WriteGatherRoundTrip : public ::testing::TestWithParam<RoundTripParam> {};

TEST_P(WriteGatherRoundTrip, GatheredBytesAreTheSpecEncodingOfEachToken) {
  const auto [format, bs] = GetParam();
  // Lengths 0, 1 and odd; starts 0, unaligned and one block in.
  Paged p(bs, {0, 1, 37, 130}, {0, 3, 0, bs + 1});
  HostCache hc(format, p.num_blocks, bs, 0, 0xAB, 0.0125f);
  Written w(p, hc);
  const int64_t tb = hc.cache.desc.token_bytes();
  std::vector<uint8_t> dst(p.rows() * tb, 0xCD);
  GatherOptions opts;
  opts.seq_starts = p.starts_t();
  gather_cache(hc.cache, p.bt(), p.cu_t(), Tensor(dst.data(), DType::u8, {p.rows(), tb}), opts);
  for (int64_t b = 0; b < p.batch(); ++b)
    for (int64_t i = 0; i < p.lens[b]; ++i) {
      const auto want = w.expected(format, w.token_of[b][p.starts[b] + i], hc.scale);
      ASSERT_EQ(0, std::memcmp(want.data(), dst.data() + (p.cu[b] + i) * tb, tb))
          << format_name(format) << " bs " << bs << " seq " << b << " row " << i;
    }
}

TEST_P(WriteGatherRoundTrip, GatherDequantEqualsDecodeOfTheStoredBytes) {
  const auto [format, bs] = GetParam();
  Paged p(bs, {5, 0, 71}, {0, 0, 2});
  HostCache hc(format, p.num_blocks, bs, 0, 0xAB, 0.02f);
  Written w(p, hc);
  std::vector<float> out(p.rows() * 576, -1.0f);
  GatherOptions opts;
  opts.seq_starts = p.starts_t();
  gather_dequant_cache(hc.cache, p.bt(), p.cu_t(), Tensor(out.data(), DType::f32, {p.rows(), 576}), opts);
  std::vector<uint16_t> out16(p.rows() * 576);
  gather_dequant_cache(hc.cache, p.bt(), p.cu_t(), Tensor(out16.data(), DType::bf16, {p.rows(), 576}), opts);
  for (int64_t b = 0; b < p.batch(); ++b)
    for (int64_t i = 0; i < p.lens[b]; ++i) {
      const auto bytes = w.expected(format, w.token_of[b][p.starts[b] + i], hc.scale);
      const int64_t row = p.cu[b] + i;
      for (int c = 0; c < 576; ++c) {
        float want;
        if (format == CacheFormat::bf16) {
          want = num::bf16_to_f32(static_cast<uint16_t>(bytes[2 * c] | bytes[2 * c + 1] << 8));
        } else if (format == CacheFormat::fp8) {
          want = num::e4m3_to_f32(bytes[c]) * hc.scale;
        } else if (c < 512) {
          float s;
          std::memcpy(&s, bytes.data() + 512 + 4 * (c / 128), 4);
          want = num::e4m3_to_f32(bytes[c]) * s;
        } else {
          const int o = 528 + 2 * (c - 512);
          want = num::bf16_to_f32(static_cast<uint16_t>(bytes[o] | bytes[o + 1] << 8));
        }
        ASSERT_EQ(out[row * 576 + c], want) << "row " << row << " col " << c;
        ASSERT_EQ(out16[row * 576 + c], num::f32_to_bf16(want)) << "row " << row << " col " << c;
      }
    }
}

INSTANTIATE_TEST_SUITE_P(Formats, WriteGatherRoundTrip,
                         ::testing::Combine(::testing::Values(CacheFormat::bf16, CacheFormat::fp8,
                                                              CacheFormat::fp8_ds_mla),
                                            ::testing::Values(1, 16, 64)),
                         [](const auto& info) {
                           return std::string(format_name(std::get<0>(info.param))) + "_bs" +
                                  std::to_string(std::get<1>(info.param));
                         });

TEST(WriteCache, NegativeSlotsAreSkippedAndLeaveTheirBytesUntouched) {
  HostCache hc(CacheFormat::fp8_ds_mla, 2, 16, 0, 0x5A);
  const auto kv = random_bf16(4 * 512), pe = random_bf16(4 * 64);
  std::vector<int64_t> slots = {3, -1, 17, -7};
  write_cache(Tensor(const_cast<uint16_t*>(kv.data()), DType::bf16, {4, 512}),
              Tensor(const_cast<uint16_t*>(pe.data()), DType::bf16, {4, 64}), vec_i64(slots), hc.cache);
  const int64_t tb = hc.cache.desc.token_bytes();
  for (int64_t s = 0; s < 32; ++s) {
    const uint8_t* p = hc.token_data(s);
    const bool written = s == 3 || s == 17;
    const bool all_poison = std::all_of(p, p + tb, [](uint8_t x) { return x == 0x5A; });
    EXPECT_EQ(all_poison, !written) << "slot " << s;
  }
}

TEST(WriteCache, RowsOfKvCBeyondSlotMappingAreNeverRead) {
  HostCache a(CacheFormat::bf16, 1, 8), b(CacheFormat::bf16, 1, 8);
  auto kv = random_bf16(6 * 512), pe = random_bf16(6 * 64);
  std::vector<int64_t> slots = {0, 1, 2};
  write_cache(Tensor(kv.data(), DType::bf16, {3, 512}), Tensor(pe.data(), DType::bf16, {3, 64}), vec_i64(slots),
              a.cache);
  std::fill(kv.begin() + 3 * 512, kv.end(), num::f32_to_bf16(NAN));  // graph padding
  write_cache(Tensor(kv.data(), DType::bf16, {6, 512}), Tensor(pe.data(), DType::bf16, {6, 64}), vec_i64(slots),
              b.cache);
  EXPECT_EQ(a.bytes, b.bytes);
}

TEST(WriteCache, F32InputsAreRoundedOnceToTheStoredType) {
  for (CacheFormat f : {CacheFormat::bf16, CacheFormat::fp8, CacheFormat::fp8_ds_mla}) {
    HostCache hc(f, 1, 4, 0, 0xAB, 0.03f);
    auto kv = random_f32(2 * 512, 3.0f), pe = random_f32(2 * 64, 3.0f);
    std::vector<int64_t> slots = {2, 0};
    write_cache(Tensor(kv.data(), DType::f32, {2, 512}), Tensor(pe.data(), DType::f32, {2, 64}), vec_i64(slots),
                hc.cache);
    for (int t = 0; t < 2; ++t) {
      const auto want = expected_token(f, kv.data() + t * 512, pe.data() + t * 64, hc.scale);
      EXPECT_EQ(0, std::memcmp(want.data(), hc.token_data(slots[t]), want.size())) << format_name(f) << " token " << t;
    }
  }
}

TEST(WriteCache, RowStridesWiderThanTheWidthAreHonoured) {
  HostCache dense(CacheFormat::fp8_ds_mla, 1, 8), strided(CacheFormat::fp8_ds_mla, 1, 8);
  auto kv = random_bf16(5 * 512), pe = random_bf16(5 * 64);
  std::vector<int64_t> slots = {7, 1, 4, 0, 2};
  write_cache(Tensor(kv.data(), DType::bf16, {5, 512}), Tensor(pe.data(), DType::bf16, {5, 64}), vec_i64(slots),
              dense.cache);
  // The same rows inside wider buffers, as slices of a fused [T, 576 + pad] projection output.
  std::vector<uint16_t> kv_wide(5 * 600, 0xFFFF), pe_wide(5 * 100, 0xFFFF);
  for (int t = 0; t < 5; ++t) {
    std::copy_n(kv.begin() + t * 512, 512, kv_wide.begin() + t * 600);
    std::copy_n(pe.begin() + t * 64, 64, pe_wide.begin() + t * 100);
  }
  write_cache(Tensor(kv_wide.data(), DType::bf16, {5, 512}, {600, 1}),
              Tensor(pe_wide.data(), DType::bf16, {5, 64}, {100, 1}), vec_i64(slots), strided.cache);
  EXPECT_EQ(dense.bytes, strided.bytes);
}

TEST(WriteCache, Fp8SaturatesOutOfRangeValuesTo448) {
  HostCache hc(CacheFormat::fp8, 1, 1, 0, 0, 0.5f);
  std::vector<float> kv(512, 1000.0f), pe(64, -1e9f);
  kv[1] = 0.5f * 448.0f;
  std::vector<int64_t> slots = {0};
  write_cache(Tensor(kv.data(), DType::f32, {1, 512}), Tensor(pe.data(), DType::f32, {1, 64}), vec_i64(slots),
              hc.cache);
  EXPECT_EQ(hc.bytes[0], 0x7e);
  EXPECT_EQ(hc.bytes[1], 0x7e);
  EXPECT_EQ(hc.bytes[512], 0xfe);
}

TEST(WriteCache, Fp8DsMlaAllZeroTileGetsFltMinScaleAndZeroCodes) {
  HostCache hc(CacheFormat::fp8_ds_mla, 1, 1);
  std::vector<float> kv(512, 0.0f), pe(64, 0.25f);
  kv[300] = -2.0f;  // tile 2 only
  std::vector<int64_t> slots = {0};
  write_cache(Tensor(kv.data(), DType::f32, {1, 512}), Tensor(pe.data(), DType::f32, {1, 64}), vec_i64(slots),
              hc.cache);
  float s[4];
  std::memcpy(s, hc.bytes.data() + 512, 16);
  EXPECT_EQ(s[0], FLT_MIN);
  EXPECT_EQ(s[2], 2.0f / 448.0f);
  EXPECT_EQ(hc.bytes[300], num::f32_to_e4m3(-448.0f));
  EXPECT_TRUE(std::all_of(hc.bytes.begin(), hc.bytes.begin() + 256, [](uint8_t x) { return x == 0; }));
}

TEST(WriteCache, PaddedBlockStrideKeepsTokensInPlaceAndPaddingUntouched) {
  HostCache hc(CacheFormat::fp8, 3, 4, 4 * 576 + 100, 0xEE, 0.01f);
  auto kv = random_bf16(12 * 512), pe = random_bf16(12 * 64);
  std::vector<int64_t> slots(12);
  std::iota(slots.begin(), slots.end(), 0);
  write_cache(Tensor(kv.data(), DType::bf16, {12, 512}), Tensor(pe.data(), DType::bf16, {12, 64}), vec_i64(slots),
              hc.cache);
  for (int64_t b = 0; b < 3; ++b) {
    const uint8_t* pad = hc.block(b) + 4 * 576;
    EXPECT_TRUE(std::all_of(pad, pad + 100, [](uint8_t x) { return x == 0xEE; })) << "block " << b;
    for (int k = 0; k < 4; ++k) {
      const int64_t t = b * 4 + k;
      const auto lat = bf16_to_f32({kv.begin() + t * 512, kv.begin() + t * 512 + 512});
      const auto rope = bf16_to_f32({pe.begin() + t * 64, pe.begin() + t * 64 + 64});
      const auto want = expected_token(CacheFormat::fp8, lat.data(), rope.data(), hc.scale);
      EXPECT_EQ(0, std::memcmp(want.data(), hc.block(b) + 576 * k, 576)) << "token " << t;
    }
  }
}

TEST(GatherCache, TokenToSeqGivenProducesTheSameRowsAsComputed) {
  Paged p(16, {9, 0, 40, 3}, {7, 2, 16, 0});
  HostCache hc(CacheFormat::bf16, p.num_blocks, 16);
  Written w(p, hc);
  std::vector<int32_t> t2s;
  for (int64_t b = 0; b < p.batch(); ++b) t2s.insert(t2s.end(), p.lens[b], static_cast<int32_t>(b));
  std::vector<uint16_t> computed(p.rows() * 576, 1), given(p.rows() * 576, 2);
  GatherOptions opts;
  opts.seq_starts = p.starts_t();
  gather_cache(hc.cache, p.bt(), p.cu_t(), Tensor(computed.data(), DType::bf16, {p.rows(), 576}), opts);
  opts.token_to_seq = vec_i32(t2s);
  gather_cache(hc.cache, p.bt(), p.cu_t(), Tensor(given.data(), DType::bf16, {p.rows(), 576}), opts);
  EXPECT_EQ(computed, given);
  // And the rows are the written bf16 inputs, from the unaligned starts.
  for (int64_t i = 0; i < 9; ++i)
    EXPECT_EQ(0, std::memcmp(computed.data() + i * 576, w.kv_c.data() + w.token_of[0][7 + i] * 512, 1024));
}

TEST(GatherCache, RowsBeyondTheLastSequenceAndPaddedDstStrideAreUntouched) {
  Paged p(4, {3, 2}, {1, 0});
  HostCache hc(CacheFormat::fp8, p.num_blocks, 4, 0, 0xAB, 0.1f);
  Written w(p, hc);
  // dst [8, 576] e4m3 with row stride 600: rows 5..7 and each row's tail stay as they were.
  std::vector<uint8_t> dst(8 * 600, 0x33);
  gather_cache(hc.cache, p.bt(), p.cu_t(), Tensor(dst.data(), DType::e4m3, {8, 576}, {600, 1}),
               GatherOptions{p.starts_t(), std::nullopt});
  for (int64_t r = 0; r < 8; ++r) {
    const uint8_t* row = dst.data() + r * 600;
    EXPECT_TRUE(std::all_of(row + 576, row + 600, [](uint8_t x) { return x == 0x33; })) << "row " << r;
    if (r >= 5) EXPECT_TRUE(std::all_of(row, row + 576, [](uint8_t x) { return x == 0x33; })) << "row " << r;
  }
  const auto want = w.expected(CacheFormat::fp8, w.token_of[1][1], hc.scale);
  EXPECT_EQ(0, std::memcmp(want.data(), dst.data() + 4 * 600, 576));
}

TEST(GatherCache, Bf16CacheGathersIntoU8RowsOfTokenBytes) {
  Paged p(16, {20}, {0});
  HostCache hc(CacheFormat::bf16, p.num_blocks, 16);
  Written w(p, hc);
  std::vector<uint8_t> dst(20 * 1152);
  gather_cache(hc.cache, p.bt(), p.cu_t(), Tensor(dst.data(), DType::u8, {20, 1152}));
  for (int64_t i = 0; i < 20; ++i) EXPECT_EQ(0, std::memcmp(dst.data() + i * 1152, hc.token_data(p.slot(0, i)), 1152));
}

TEST(GatherCache, EmptyBatchWritesNothing) {
  HostCache hc(CacheFormat::fp8_ds_mla, 1, 4);
  std::vector<int32_t> bt, cu = {0};
  std::vector<uint8_t> dst(656, 0x42);
  gather_cache(hc.cache, Tensor(bt.data(), DType::i32, {0, 3}), vec_i32(cu), Tensor(dst.data(), DType::u8, {1, 656}));
  EXPECT_TRUE(std::all_of(dst.begin(), dst.end(), [](uint8_t x) { return x == 0x42; }));
}

// SPEC §6: FP8 storage vs the bf16 cache on N(0,1) data. The per-value error bounds the attention
// output error, which averages it further.
TEST(GatherDequant, Fp8StorageErrorOnNormalDataIsWithinSpecBudget) {
  Paged p(64, {300, 211}, {0, 0});
  for (auto [format, budget] : {std::pair{CacheFormat::fp8, 6e-2}, std::pair{CacheFormat::fp8_ds_mla, 4e-2}}) {
    HostCache hc(format, p.num_blocks, 64, 0, 0xAB, 4.5f / 448.0f);
    Written w(p, hc);
    std::vector<float> out(p.rows() * 576), ref(p.rows() * 576);
    gather_dequant_cache(hc.cache, p.bt(), p.cu_t(), Tensor(out.data(), DType::f32, {p.rows(), 576}));
    for (int64_t b = 0; b < p.batch(); ++b)
      for (int64_t i = 0; i < p.lens[b]; ++i) {
        const int64_t t = w.token_of[b][i], r = p.cu[b] + i;
        for (int c = 0; c < 512; ++c) ref[r * 576 + c] = num::bf16_to_f32(w.kv_c[t * 512 + c]);
        for (int c = 0; c < 64; ++c) ref[r * 576 + 512 + c] = num::bf16_to_f32(w.k_pe[t * 64 + c]);
      }
    const double err = rel_err(out, ref);
    EXPECT_LE(err, budget) << format_name(format);
    RecordProperty(std::string("rel_err_") + format_name(format), std::to_string(err));
    EXPECT_GT(err, 0.0) << format_name(format);  // really quantized
  }
}

TEST(GatherDequant, DsV4CacheDequantizesTo512WideRows) {
  HostCache hc(CacheFormat::dsv4, 2, 16);
  auto k = random_bf16(20 * 512);
  std::vector<int64_t> slots(20);
  std::iota(slots.begin(), slots.end(), 0);
  dsv4_write(Tensor(k.data(), DType::bf16, {20, 512}), vec_i64(slots), hc.cache);
  std::vector<int32_t> bt = {0, 1}, cu = {0, 20};
  std::vector<uint16_t> out(20 * 512);
  gather_dequant_cache(hc.cache, Tensor(bt.data(), DType::i32, {1, 2}), vec_i32(cu),
                       Tensor(out.data(), DType::bf16, {20, 512}));
  for (int64_t t = 0; t < 20; ++t)
    for (int c = 448; c < 512; ++c) EXPECT_EQ(out[t * 512 + c], k[t * 512 + c]) << "rope is copied";
  EXPECT_LE(rel_err(bf16_to_f32(out), bf16_to_f32(k)), 4e-2);
}

}  // namespace
}  // namespace mlakv::test
