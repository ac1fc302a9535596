// The validation that runs before every call builds nothing on success: a message is built only
// for a failure. (Built on every check, its parts cost mla_decode ~30 µs of host time a call,
// longer than a small decode step on the GPU: session 42.) Counts heap allocations on this thread
// with a replaced global operator new.
#include <gtest/gtest.h>

#include <cstdlib>
#include <new>
#include <vector>

#include "attention_test_util.hpp"
#include "validate.hpp"

namespace {
thread_local long g_allocations = 0;
}  // namespace

void* operator new(std::size_t n) {
  ++g_allocations;
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace mlakv::test {
namespace {

using namespace attn;

template <class F> long allocations_in(F&& f) {
  const long before = g_allocations;
  f();
  return g_allocations - before;
}

struct GoodDecode {
  static constexpr int B = 3, H = 16, bs = 64;
  OwnedCache cache;
  std::vector<int32_t> table{0, 1, 2, 3, 4, 5}, lens{100, 0, 128};
  std::vector<uint16_t> q = std::vector<uint16_t>(B * H * kHeadDim), out = std::vector<uint16_t>(B * H * kLatentDim);
  std::vector<float> lse = std::vector<float>(B * H);
  std::vector<std::byte> ws = std::vector<std::byte>(mla_decode_workspace_size(B, 1, H, Device::cpu()) + 1);
  DecodeParams params;
  explicit GoodDecode(CacheFormat f) : cache(f, 8, bs) { params.softmax_scale = 0.07f; }
  void validate() {
    detail::validate_mla_decode(Tensor(q.data(), DType::bf16, {B, 1, H, kHeadDim}), cache.cache,
                                Tensor(table.data(), DType::i32, {B, 2}), Tensor(lens.data(), DType::i32, {B}),
                                Tensor(out.data(), DType::bf16, {B, 1, H, kLatentDim}),
                                Tensor(lse.data(), DType::f32, {B, 1, H}), params, Workspace{ws.data(), ws.size()});
  }
};

TEST(ValidationAllocations, AGoodDecodeIsValidatedWithoutAllocating) {
  for (CacheFormat f : {CacheFormat::bf16, CacheFormat::fp8, CacheFormat::fp8_ds_mla}) {
    GoodDecode d(f);
    EXPECT_EQ(allocations_in([&] { d.validate(); }), 0) << format_name(f);
  }
}

TEST(ValidationAllocations, AGoodCacheWriteIsValidatedWithoutAllocating) {
  OwnedCache cache(CacheFormat::fp8_ds_mla, 4, 16);
  std::vector<uint16_t> kv(5 * kLatentDim), pe(5 * kRopeDim);
  std::vector<int64_t> slots{0, 7, -1, 63, 20};
  const Tensor tkv(kv.data(), DType::bf16, {5, kLatentDim}), tpe(pe.data(), DType::bf16, {5, kRopeDim}),
      ts(slots.data(), DType::i64, {5});
  EXPECT_EQ(allocations_in([&] { detail::validate_write_cache(tkv, tpe, ts, cache.cache); }), 0);
}

TEST(ValidationAllocations, AGoodGatherAndMergeAreValidatedWithoutAllocating) {
  OwnedCache cache(CacheFormat::fp8, 4, 16);
  std::vector<int32_t> table{0, 1, 2, 3}, cu{0, 20, 30};
  std::vector<uint16_t> dst(30 * kHeadDim);
  const Tensor tt(table.data(), DType::i32, {2, 2}), tcu(cu.data(), DType::i32, {3}),
      td(dst.data(), DType::bf16, {30, kHeadDim});
  EXPECT_EQ(allocations_in([&] { detail::validate_gather_dequant_cache(cache.cache, tt, tcu, td, {}); }), 0);
  std::vector<float> oa(4 * 8 * kLatentDim), ob(oa.size()), la(4 * 8), lb(la.size());
  const Tensor toa(oa.data(), DType::f32, {4, 8, kLatentDim}), tob(ob.data(), DType::f32, {4, 8, kLatentDim}),
      tla(la.data(), DType::f32, {4, 8}), tlb(lb.data(), DType::f32, {4, 8});
  EXPECT_EQ(allocations_in([&] { detail::validate_merge_states(toa, tla, tob, tlb, toa, tla); }), 0);
}

TEST(ValidationAllocations, ARejectedDecodeBuildsItsMessage) {
  // The counter sees the library's allocations: a failure's message is one.
  GoodDecode d(CacheFormat::bf16);
  d.lens[1] = -1;
  const long n = allocations_in([&] { EXPECT_THROW(d.validate(), Error); });
  EXPECT_GT(n, 0);
}

}  // namespace
}  // namespace mlakv::test
