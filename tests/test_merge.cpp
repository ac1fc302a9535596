// merge_states (SPEC §3.7) on the CPU.
#include <gtest/gtest.h>

#include "attention_test_util.hpp"

namespace mlakv::test {
namespace {

using attn::bf16_ulps;

// Exact merge of two states in double, the definition itself.
void ref_merge(double la, double lb, const std::vector<double>& a, const std::vector<double>& b, std::vector<double>& o,
               double& l) {
  auto clean = [](double x) { return (std::isnan(x) || x == INFINITY) ? -INFINITY : x; };
  la = clean(la), lb = clean(lb);
  const double m = std::max(la, lb);
  o.assign(a.size(), 0.0);
  if (m == -INFINITY) {
    l = -INFINITY;
    return;
  }
  const double s = std::exp(la - m) + std::exp(lb - m);
  l = m + std::log(s);
  const double wa = std::exp(la - l), wb = std::exp(lb - l);
  for (std::size_t i = 0; i < a.size(); ++i) o[i] = (wa ? wa * a[i] : 0) + (wb ? wb * b[i] : 0);
}

struct States {
  int64_t n, h, d;
  std::vector<float> oa, ob, la, lb;
  States(int64_t n_, int64_t h_, int64_t d_) : n(n_), h(h_), d(d_) {
    oa = random_f32(static_cast<std::size_t>(n * h * d));
    ob = random_f32(static_cast<std::size_t>(n * h * d));
    la = random_f32(static_cast<std::size_t>(n * h), 3.0f);
    lb = random_f32(static_cast<std::size_t>(n * h), 3.0f);
  }
};

TEST(MergeStates, F32MatchesDefinition) {
  States s(3, 5, 512);
  s.la[0] = -INFINITY;                  // a empty
  s.lb[1] = -INFINITY;                  // b empty
  s.la[2] = s.lb[2] = -INFINITY;        // both empty
  s.la[3] = INFINITY;                   // +inf counts as empty
  s.lb[4] = NAN;                        // NaN counts as empty
  s.la[5] = 80.0f, s.lb[5] = -80.0f;    // one dominates, no overflow
  s.oa[2 * 512] = NAN;                  // garbage in an empty state must not leak
  std::vector<float> o(s.oa.size(), 7.0f), l(s.la.size(), 7.0f);
  merge_states(Tensor(s.oa.data(), DType::f32, {3, 5, 512}), Tensor(s.la.data(), DType::f32, {3, 5}),
               Tensor(s.ob.data(), DType::f32, {3, 5, 512}), Tensor(s.lb.data(), DType::f32, {3, 5}),
               Tensor(o.data(), DType::f32, {3, 5, 512}), Tensor(l.data(), DType::f32, {3, 5}));
  for (int64_t r = 0; r < 15; ++r) {
    std::vector<double> a(s.oa.begin() + r * 512, s.oa.begin() + (r + 1) * 512);
    std::vector<double> b(s.ob.begin() + r * 512, s.ob.begin() + (r + 1) * 512);
    std::vector<double> ro;
    double rl;
    ref_merge(s.la[r], s.lb[r], a, b, ro, rl);
    if (std::isinf(rl)) {
      EXPECT_EQ(l[r], -INFINITY) << r;
    } else {
      EXPECT_NEAR(l[r], rl, 1e-6 * std::max(1.0, std::fabs(rl))) << r;
    }
    for (int i = 0; i < 512; ++i) ASSERT_NEAR(o[r * 512 + i], ro[i], 1e-6 * (1 + std::fabs(ro[i]))) << r << "," << i;
  }
  EXPECT_EQ(l[2], -INFINITY);
  for (int i = 0; i < 512; ++i) EXPECT_EQ(o[2 * 512 + i], 0.0f);
}

TEST(MergeStates, Bf16StridedAndMixedDtypes) {
  const int64_t n = 2, h = 3, d = 64, pad = 16;
  States s(n, h, d);
  // o_a bf16 with a padded head stride, o_b f32 dense, output bf16 with its own padding.
  std::vector<uint16_t> oa(static_cast<std::size_t>(n * h * (d + pad)), 0xFFFF);
  for (int64_t r = 0; r < n * h; ++r)
    for (int64_t i = 0; i < d; ++i) oa[r * (d + pad) + i] = num::f32_to_bf16(s.oa[r * d + i]);
  std::vector<uint16_t> o(static_cast<std::size_t>(n * h * (d + pad)), 0x1234);
  std::vector<float> l(static_cast<std::size_t>(n * h));
  merge_states(Tensor(oa.data(), DType::bf16, {n, h, d}, {h * (d + pad), d + pad, 1}),
               Tensor(s.la.data(), DType::f32, {n, h}), Tensor(s.ob.data(), DType::f32, {n, h, d}),
               Tensor(s.lb.data(), DType::f32, {n, h}),
               Tensor(o.data(), DType::bf16, {n, h, d}, {h * (d + pad), d + pad, 1}), Tensor(l.data(), DType::f32, {n, h}));
  for (int64_t r = 0; r < n * h; ++r) {
    std::vector<double> a, b(s.ob.begin() + r * d, s.ob.begin() + (r + 1) * d), ro;
    for (int64_t i = 0; i < d; ++i) a.push_back(num::bf16_to_f32(oa[r * (d + pad) + i]));
    double rl;
    ref_merge(s.la[r], s.lb[r], a, b, ro, rl);
    for (int64_t i = 0; i < d; ++i) ASSERT_LE(bf16_ulps(o[r * (d + pad) + i], ro[i]), 0.5 + 1e-6);
    for (int64_t i = d; i < d + pad; ++i) ASSERT_EQ(o[r * (d + pad) + i], 0x1234) << "padding written";
  }
}

TEST(MergeStates, InPlaceIntoA) {
  States s(4, 2, 128);
  const std::vector<float> oa0 = s.oa, la0 = s.la;
  const Tensor oa(s.oa.data(), DType::f32, {4, 2, 128}), la(s.la.data(), DType::f32, {4, 2});
  merge_states(oa, la, Tensor(s.ob.data(), DType::f32, {4, 2, 128}), Tensor(s.lb.data(), DType::f32, {4, 2}), oa, la);
  for (int64_t r = 0; r < 8; ++r) {
    std::vector<double> a(oa0.begin() + r * 128, oa0.begin() + (r + 1) * 128),
        b(s.ob.begin() + r * 128, s.ob.begin() + (r + 1) * 128), ro;
    double rl;
    ref_merge(la0[r], s.lb[r], a, b, ro, rl);
    EXPECT_NEAR(s.la[r], rl, 1e-5);
    for (int i = 0; i < 128; ++i) ASSERT_NEAR(s.oa[r * 128 + i], ro[i], 1e-6 * (1 + std::fabs(ro[i])));
  }
}

// Attention over tokens [0, 100) equals the merge of attention over [0, 48) and [48, 100): with
// block size 4 the second part is a request whose block-table row starts at entry 12.
TEST(MergeStates, SplitDecodeRecombines) {
  using namespace attn;
  const int H = 8, bs = 4;
  Requests req({100});
  BlockTable bt({ceil_div(100, bs)});
  OwnedCache cache(CacheFormat::bf16, bt.num_blocks, bs);
  auto slots = plain_slots(req, bt, bs);
  write_tokens(req, cache.cache, slots);
  std::vector<int32_t> table(3 * 25, 0), lens{100, 48, 52};
  for (int j = 0; j < 25; ++j) table[j] = table[25 + j] = bt.at(0, j);
  for (int j = 0; j < 13; ++j) table[50 + j] = bt.at(0, 12 + j);
  const std::vector<uint16_t> q1 = random_bf16(H * kHeadDim);
  std::vector<uint16_t> q;
  for (int r = 0; r < 3; ++r) q.insert(q.end(), q1.begin(), q1.end());
  std::vector<float> o(3 * H * kLatentDim), l(3 * H);
  DecodeParams p;
  p.softmax_scale = 0.05f;
  mla_decode(Tensor(q.data(), DType::bf16, {3, 1, H, kHeadDim}), cache.cache,
             Tensor(table.data(), DType::i32, {3, 25}), Tensor(lens.data(), DType::i32, {3}),
             Tensor(o.data(), DType::f32, {3, 1, H, kLatentDim}), Tensor(l.data(), DType::f32, {3, 1, H}), p);
  std::vector<float> m(H * kLatentDim), ml(H);
  const int64_t HD = H * kLatentDim;
  merge_states(Tensor(o.data() + HD, DType::f32, {1, H, kLatentDim}), Tensor(l.data() + H, DType::f32, {1, H}),
               Tensor(o.data() + 2 * HD, DType::f32, {1, H, kLatentDim}), Tensor(l.data() + 2 * H, DType::f32, {1, H}),
               Tensor(m.data(), DType::f32, {1, H, kLatentDim}), Tensor(ml.data(), DType::f32, {1, H}));
  EXPECT_LE(rel_err(m, std::vector<float>(o.begin(), o.begin() + HD)), 3e-7);
  EXPECT_LE(max_lse_diff(ml, std::vector<float>(l.begin(), l.begin() + H)), 2e-6);
}

}  // namespace
}  // namespace mlakv::test
