// CPU mla_decode against the independent fp64 reference, the peers' vectors and the FP8 storage
// budgets (SPEC §3.6, §6, §8).
#include <gtest/gtest.h>

#include "attention_test_util.hpp"

namespace mlakv::test {
namespace {

using namespace attn;

const double kScale = 1.0 / std::sqrt(576.0);

struct DecodeCase {
  CacheFormat format = CacheFormat::bf16;
  int block_size = 16;
  int heads = 16;
  int s_q = 1;
  std::vector<int32_t> lens{0, 1, 17, 64};
  bool causal = true;
  bool q_e4m3 = false;
  DType out_dtype = DType::bf16;
};

struct DecodeRun {
  RefResult ref;
  std::vector<uint8_t> out;  // bf16 or f32 bytes
  std::vector<float> lse;
  DType out_dtype;
  double out_at(std::size_t i) const {
    if (out_dtype == DType::f32) return reinterpret_cast<const float*>(out.data())[i];
    return num::bf16_to_f32(reinterpret_cast<const uint16_t*>(out.data())[i]);
  }
};

DecodeRun run_case(const DecodeCase& c) {
  Requests req(c.lens);
  std::vector<int64_t> need;
  for (int32_t L : c.lens) need.push_back(ceil_div(L, c.block_size));
  BlockTable bt(need);
  OwnedCache cache(c.format, bt.num_blocks, c.block_size, 0.011f);
  auto slots = plain_slots(req, bt, c.block_size);
  write_tokens(req, cache.cache, slots);

  const int64_t B = req.batch(), n_q = B * c.s_q * c.heads;
  std::vector<uint16_t> q_bf16 = random_bf16(static_cast<std::size_t>(n_q * kHeadDim));
  std::vector<uint8_t> q_e4m3(q_bf16.size());
  float q_scale = 0.01f;
  for (std::size_t i = 0; i < q_bf16.size(); ++i) q_e4m3[i] = num::f32_to_e4m3(num::bf16_to_f32(q_bf16[i]) / q_scale);
  const Tensor q = c.q_e4m3 ? Tensor(q_e4m3.data(), DType::e4m3, {B, c.s_q, c.heads, kHeadDim})
                            : Tensor(q_bf16.data(), DType::bf16, {B, c.s_q, c.heads, kHeadDim});

  DecodeRun r;
  r.out_dtype = c.out_dtype;
  r.out.assign(static_cast<std::size_t>(n_q * kLatentDim) * dtype_size(c.out_dtype), 0xCD);
  r.lse.assign(static_cast<std::size_t>(n_q), 123.0f);
  std::vector<int32_t> lens = c.lens;
  DecodeParams params;
  params.softmax_scale = static_cast<float>(kScale);
  params.causal = c.causal;
  params.q_scale = c.q_e4m3 ? &q_scale : nullptr;
  mla_decode(q, cache.cache, bt.tensor, Tensor(lens.data(), DType::i32, {B}),
             Tensor(r.out.data(), c.out_dtype, {B, c.s_q, c.heads, kLatentDim}),
             Tensor(r.lse.data(), DType::f32, {B, c.s_q, c.heads}), params);
  r.ref = ref_decode(q, q_scale, cache.cache, bt.tensor, c.lens, static_cast<float>(kScale), c.causal);
  return r;
}

// The op also computes in double: a bf16 output is the correctly rounded reference (up to ties
// within the double sums' noise), f32 within one f32 rounding, lse within one f32 rounding.
void expect_matches_reference(const DecodeCase& c) {
  const DecodeRun r = run_case(c);
  double worst_out = 0;
  for (std::size_t i = 0; i < r.ref.out.size(); ++i) {
    const double exact = r.ref.out[i];
    if (c.out_dtype == DType::bf16)
      worst_out = std::max(worst_out, bf16_ulps(reinterpret_cast<const uint16_t*>(r.out.data())[i], exact));
    else
      worst_out = std::max(worst_out, std::fabs(r.out_at(i) - exact) / std::max(std::fabs(exact), 1e-30));
  }
  if (c.out_dtype == DType::bf16)
    EXPECT_LE(worst_out, 0.5 + 1e-6) << "bf16 ulps";
  else
    EXPECT_LE(worst_out, 6.0e-8) << "f32 relative";
  for (std::size_t i = 0; i < r.ref.lse.size(); ++i) {
    if (std::isinf(r.ref.lse[i])) {
      EXPECT_EQ(r.lse[i], -INFINITY) << "row " << i;
      for (int k = 0; k < kLatentDim; ++k) ASSERT_EQ(r.out_at(i * kLatentDim + k), 0.0) << "empty row " << i;
      continue;
    }
    EXPECT_NEAR(r.lse[i], r.ref.lse[i], 6.0e-8 * std::max(1.0, std::fabs(r.ref.lse[i]))) << "row " << i;
  }
}

class DecodeFormats : public ::testing::TestWithParam<CacheFormat> {};

TEST_P(DecodeFormats, BlockSizes) {
  for (int bs : {1, 16, 64}) {
    SCOPED_TRACE("block_size " + std::to_string(bs));
    DecodeCase c;
    c.format = GetParam();
    c.block_size = bs;
    c.lens = {0, 1, 63, 64, 65, 130};
    expect_matches_reference(c);
  }
}

TEST_P(DecodeFormats, CausalMultiQuery) {
  for (int s_q : {1, 2, 3, 4}) {
    SCOPED_TRACE("s_q " + std::to_string(s_q));
    DecodeCase c;
    c.format = GetParam();
    c.s_q = s_q;
    c.heads = 4;
    c.lens = {0, 1, 2, 3, 5, 40};  // shorter than s_q: the first queries see nothing
    expect_matches_reference(c);
  }
}

TEST_P(DecodeFormats, NonCausalMultiQuery) {
  DecodeCase c;
  c.format = GetParam();
  c.s_q = 3;
  c.heads = 2;
  c.causal = false;
  c.lens = {1, 2, 33};
  expect_matches_reference(c);
}

TEST_P(DecodeFormats, E4m3Query) {
  DecodeCase c;
  c.format = GetParam();
  c.q_e4m3 = true;
  c.s_q = 2;
  expect_matches_reference(c);
}

TEST_P(DecodeFormats, F32Output) {
  DecodeCase c;
  c.format = GetParam();
  c.out_dtype = DType::f32;
  c.lens = {0, 5, 77};
  expect_matches_reference(c);
}

INSTANTIATE_TEST_SUITE_P(Cpu, DecodeFormats,
                         ::testing::Values(CacheFormat::bf16, CacheFormat::fp8, CacheFormat::fp8_ds_mla),
                         [](const auto& info) { return std::string(format_name(info.param)); });

TEST(DecodeCpu, HeadCounts) {
  for (int heads : {1, 16, 128}) {
    SCOPED_TRACE("heads " + std::to_string(heads));
    DecodeCase c;
    c.heads = heads;
    c.lens = {3, 50};
    expect_matches_reference(c);
  }
}

TEST(DecodeCpu, EmptyRequestsGiveZeroAndMinusInf) {
  DecodeCase c;
  c.lens = {0, 0};
  c.s_q = 2;
  const DecodeRun r = run_case(c);
  for (std::size_t i = 0; i < r.lse.size(); ++i) EXPECT_EQ(r.lse[i], -INFINITY);
  for (std::size_t i = 0; i < r.ref.out.size(); ++i) ASSERT_EQ(r.out_at(i), 0.0);
}

// q, out and lse as views with padded head and token strides.
TEST(DecodeCpu, StridedViews) {
  const int B = 2, S = 2, H = 3, pad = 7;
  Requests req({9, 40});
  BlockTable bt({1, 3});
  OwnedCache cache(CacheFormat::bf16, bt.num_blocks, 16);
  auto slots = plain_slots(req, bt, 16);
  write_tokens(req, cache.cache, slots);
  std::vector<int32_t> lens = req.lens;
  const int64_t qh = kHeadDim + pad, oh = kLatentDim + pad;
  std::vector<uint16_t> qbuf = random_bf16(static_cast<std::size_t>(B * S * H * qh));
  std::vector<uint16_t> qdense(static_cast<std::size_t>(B * S * H * kHeadDim));
  for (int64_t r = 0; r < B * S * H; ++r)
    std::copy_n(qbuf.begin() + r * qh, kHeadDim, qdense.begin() + r * kHeadDim);
  std::vector<float> out(static_cast<std::size_t>(B * S * H * oh), 99.0f), lse(static_cast<std::size_t>(B * S * H * 2));
  DecodeParams p;
  p.softmax_scale = static_cast<float>(kScale);
  mla_decode(Tensor(qbuf.data(), DType::bf16, {B, S, H, kHeadDim}, {S * H * qh, H * qh, qh, 1}), cache.cache,
             bt.tensor, Tensor(lens.data(), DType::i32, {B}),
             Tensor(out.data(), DType::f32, {B, S, H, kLatentDim}, {S * H * oh, H * oh, oh, 1}),
             Tensor(lse.data(), DType::f32, {B, S, H}, {S * H * 2, H * 2, 2}), p);
  const RefResult ref = ref_decode(Tensor(qdense.data(), DType::bf16, {B, S, H, kHeadDim}), 1.0f, cache.cache,
                                   bt.tensor, req.lens, static_cast<float>(kScale), true);
  for (int64_t r = 0; r < B * S * H; ++r) {
    for (int i = 0; i < kLatentDim; ++i)
      ASSERT_NEAR(out[static_cast<std::size_t>(r * oh + i)], ref.out[static_cast<std::size_t>(r * kLatentDim + i)],
                  1e-6);
    for (int i = kLatentDim; i < oh; ++i) ASSERT_EQ(out[static_cast<std::size_t>(r * oh + i)], 99.0f) << "padding";
    EXPECT_NEAR(lse[static_cast<std::size_t>(r * 2)], ref.lse[static_cast<std::size_t>(r)], 1e-5);
  }
}

// FP8 storage against the unquantized bf16 cache on N(0,1) data (SPEC §6).
TEST(DecodeCpu, Fp8StorageErrorBudgets) {
  const int B = 2, H = 16, bs = 64;
  Requests req({300, 517});
  std::vector<int64_t> need{ceil_div(300, bs), ceil_div(517, bs)};
  BlockTable bt(need);
  auto slots = plain_slots(req, bt, bs);
  std::vector<uint16_t> q = random_bf16(static_cast<std::size_t>(B * H * kHeadDim));
  std::vector<int32_t> lens = req.lens;
  auto attend = [&](CacheFormat f, float fp8_scale) {
    OwnedCache cache(f, bt.num_blocks, bs, fp8_scale);
    write_tokens(req, cache.cache, slots);
    std::vector<float> out(static_cast<std::size_t>(B * H * kLatentDim)), lse(static_cast<std::size_t>(B * H));
    DecodeParams p;
    p.softmax_scale = static_cast<float>(kScale);
    mla_decode(Tensor(q.data(), DType::bf16, {B, 1, H, kHeadDim}), cache.cache, bt.tensor,
               Tensor(lens.data(), DType::i32, {B}), Tensor(out.data(), DType::f32, {B, 1, H, kLatentDim}),
               Tensor(lse.data(), DType::f32, {B, 1, H}), p);
    return out;
  };
  const std::vector<float> ref = attend(CacheFormat::bf16, 1.0f);
  const double e_fp8 = rel_err(attend(CacheFormat::fp8, 5.0f / 448.0f), ref);
  const double e_ds = rel_err(attend(CacheFormat::fp8_ds_mla, 1.0f), ref);
  EXPECT_LE(e_fp8, 6e-2);
  EXPECT_LE(e_ds, 4e-2);
  EXPECT_GT(e_fp8, 0.0);  // the quantization did happen
}

// A number of one set in vectors/manifest.json. The manifest is flat enough that finding the key
// after the set's name is exact; the tests do not need a JSON library for two numbers.
double manifest_number(const std::string& set, const std::string& key) {
  std::ifstream f(data_path("vectors/manifest.json"));
  const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const std::size_t at = text.find("\"" + set + "\"");
  const std::size_t k = text.find("\"" + key + "\"", at);
  if (at == std::string::npos || k == std::string::npos) throw std::runtime_error("manifest: no " + set + "." + key);
  return std::stod(text.substr(text.find(':', k) + 1));
}

struct PeerVector {
  std::vector<int32_t> lens, table;
  std::vector<uint16_t> q, out;
  std::vector<float> lse;
  std::vector<uint8_t> cache;
  int64_t B = 0, H = 0, max_blocks = 0, num_blocks = 0;
  double softmax_scale = 0;
};

PeerVector load_peer(const std::string& set, const std::string& cache_file, int64_t token_bytes) {
  PeerVector v;
  const std::string dir = "vectors/" + set + "/";
  v.q = read_raw<uint16_t>(dir + "q.bf16");
  v.out = read_raw<uint16_t>(dir + "out.bf16");
  v.lse = read_raw<float>(dir + "lse.f32");
  v.lens = read_raw<int32_t>(dir + "seq_lens.i32");
  v.table = read_raw<int32_t>(dir + "block_table.i32");
  v.cache = read_raw<uint8_t>(dir + cache_file);
  v.B = static_cast<int64_t>(v.lens.size());
  v.H = static_cast<int64_t>(v.q.size()) / (v.B * kHeadDim);
  v.max_blocks = static_cast<int64_t>(v.table.size()) / v.B;
  v.num_blocks = static_cast<int64_t>(v.cache.size()) / (64 * token_bytes);
  v.softmax_scale = manifest_number(set, "softmax_scale");
  return v;
}

// Decodes a peer vector with our CPU reference; returns (out bf16 as float, lse).
std::pair<std::vector<float>, std::vector<float>> decode_peer(PeerVector& v, const Cache& cache, RefResult* ref) {
  std::vector<uint16_t> out(static_cast<std::size_t>(v.B * v.H * kLatentDim));
  std::vector<float> lse(static_cast<std::size_t>(v.B * v.H));
  const Tensor q(v.q.data(), DType::bf16, {v.B, 1, v.H, kHeadDim});
  const Tensor bt(v.table.data(), DType::i32, {v.B, v.max_blocks});
  DecodeParams p;
  p.softmax_scale = static_cast<float>(v.softmax_scale);
  mla_decode(q, cache, bt, Tensor(v.lens.data(), DType::i32, {v.B}),
             Tensor(out.data(), DType::bf16, {v.B, 1, v.H, kLatentDim}), Tensor(lse.data(), DType::f32, {v.B, 1, v.H}),
             p);
  *ref = ref_decode(q, 1.0f, cache, bt, v.lens, static_cast<float>(v.softmax_scale), true);
  return {bf16_to_f32(out), lse};
}

TEST(DecodeCpu, MatchesFlashMlaVector) {
  PeerVector v = load_peer("decode_bf16_flashmla", "cache.bf16", 1152);
  Cache cache{v.cache.data(), {CacheFormat::bf16, v.num_blocks, 64, 0}, Device::cpu(), nullptr};
  RefResult ref;
  auto [out, lse] = decode_peer(v, cache, &ref);
  EXPECT_LE(rel_err(out, bf16_to_f32(v.out)), 4e-3);
  EXPECT_LE(max_lse_diff(lse, v.lse), 1e-3);
  EXPECT_LE(rel_err(out, ref.out), 2e-3);  // only the output rounding
  EXPECT_LE(max_lse_diff(lse, ref.lse), 1e-5);
}

TEST(DecodeCpu, MatchesVllmFp8Vector) {
  PeerVector v = load_peer("decode_fp8_vllm_triton", "cache.e4m3", 576);
  float k_scale = static_cast<float>(manifest_number("decode_fp8_vllm_triton", "k_scale"));
  Cache cache{v.cache.data(), {CacheFormat::fp8, v.num_blocks, 64, 0}, Device::cpu(), &k_scale};
  RefResult ref;
  auto [out, lse] = decode_peer(v, cache, &ref);
  EXPECT_LE(rel_err(out, bf16_to_f32(v.out)), 4e-3);
  EXPECT_LE(max_lse_diff(lse, v.lse), 5e-3);
  // Folding the scale keeps us on the fp64 reference of the stored cache, unlike the peer.
  EXPECT_LE(max_lse_diff(lse, ref.lse), 1e-5);
  EXPECT_LE(rel_err(out, ref.out), 2e-3);
}

}  // namespace
}  // namespace mlakv::test
