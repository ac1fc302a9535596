// The in-process CPU communicator: collective semantics, reuse, and failing without hanging.
#include <gtest/gtest.h>

#include <chrono>
#include <numeric>

#include "comm/cpu_group.hpp"
#include "test_util.hpp"

namespace mlakv::test {
namespace {

TEST(CpuGroup, CollectivesAcrossWorldSizesRepeatedly) {
  for (int W : {1, 2, 3, 5, 8}) {
    auto comms = make_cpu_group(W);
    run_ranks(W, [&](int r) {
      Communicator& c = *comms[static_cast<std::size_t>(r)];
      ASSERT_EQ(c.rank(), r);
      ASSERT_EQ(c.world(), W);
      ASSERT_TRUE(c.device().is_cpu());
      for (int it = 0; it < 20; ++it) {
        // all_gather: rank s contributes {s, it, s + it}.
        std::vector<int32_t> send{r, it, r + it}, recv(static_cast<std::size_t>(3 * W), -1);
        c.all_gather(send.data(), recv.data(), 3 * sizeof(int32_t), {});
        for (int s = 0; s < W; ++s) ASSERT_EQ(recv[static_cast<std::size_t>(3 * s + 2)], s + it);
        // reduce_scatter_sum: block d of rank s holds s + d + it in every element.
        const std::size_t count = 5;
        std::vector<float> rs(count * static_cast<std::size_t>(W)), out(count, -1.0f);
        for (int d = 0; d < W; ++d)
          for (std::size_t i = 0; i < count; ++i) rs[static_cast<std::size_t>(d) * count + i] = static_cast<float>(r + d + it);
        c.reduce_scatter_sum(rs.data(), out.data(), count, {});
        const float expect = static_cast<float>(W * (W - 1) / 2 + W * (r + it));
        for (float v : out) ASSERT_EQ(v, expect);
        // all_to_all: block d of rank s is 100 s + d.
        std::vector<int64_t> a2a(static_cast<std::size_t>(W)), back(static_cast<std::size_t>(W));
        for (int d = 0; d < W; ++d) a2a[static_cast<std::size_t>(d)] = 100 * r + d + 1000 * it;
        c.all_to_all(a2a.data(), back.data(), sizeof(int64_t), {});
        for (int s = 0; s < W; ++s) ASSERT_EQ(back[static_cast<std::size_t>(s)], 100 * s + r + 1000 * it);
      }
    });
  }
}

TEST(CpuGroup, ZeroByteCollectives) {
  auto comms = make_cpu_group(3);
  run_ranks(3, [&](int r) {
    comms[static_cast<std::size_t>(r)]->all_gather(nullptr, nullptr, 0, {});
    comms[static_cast<std::size_t>(r)]->all_to_all(nullptr, nullptr, 0, {});
  });
}

TEST(CpuGroup, MismatchedSizesThrowOnEveryRank) {
  auto comms = detail::make_cpu_group(2, std::chrono::milliseconds(2000));
  std::vector<std::string> msgs(2);
  run_ranks(2, [&](int r) {
    std::vector<uint8_t> send(8), recv(16);
    try {
      comms[static_cast<std::size_t>(r)]->all_gather(send.data(), recv.data(), r == 0 ? 8 : 4, {});
    } catch (const Error& e) {
      msgs[static_cast<std::size_t>(r)] = e.what();
    }
  });
  for (const auto& m : msgs) EXPECT_NE(m.find("same size"), std::string::npos) << m;
}

TEST(CpuGroup, DifferentCollectivesThrow) {
  auto comms = detail::make_cpu_group(2, std::chrono::milliseconds(2000));
  std::vector<std::string> msgs(2);
  run_ranks(2, [&](int r) {
    std::vector<float> send(8), recv(8);
    try {
      if (r == 0) comms[0]->all_gather(send.data(), recv.data(), 16, {});
      else comms[1]->all_to_all(send.data(), recv.data(), 16, {});
    } catch (const Error& e) {
      msgs[static_cast<std::size_t>(r)] = e.what();
    }
  });
  for (const auto& m : msgs) EXPECT_NE(m.find("all_to_all"), std::string::npos) << m;
}

// A rank that throws before a collective: the others give up after the timeout, and the group
// stays broken so that no later collective waits again.
TEST(CpuGroup, RankThatThrowsDoesNotHangTheOthers) {
  const auto timeout = std::chrono::milliseconds(200);
  auto comms = detail::make_cpu_group(3, timeout);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::string> msgs(3);
  run_ranks(3, [&](int r) {
    try {
      if (r == 1) throw Error("rank 1 failed");
      int x = r, y[3];
      comms[static_cast<std::size_t>(r)]->all_gather(&x, y, sizeof(int), {});
    } catch (const Error& e) {
      msgs[static_cast<std::size_t>(r)] = e.what();
    }
  });
  const auto elapsed = std::chrono::steady_clock::now() - t0;
  EXPECT_LT(elapsed, std::chrono::seconds(5));
  EXPECT_NE(msgs[0].find("timed out"), std::string::npos) << msgs[0];
  EXPECT_NE(msgs[2].find("rank 2"), std::string::npos) << msgs[2];
  // Broken for good: fails at once.
  int x = 0, y[3];
  const auto t1 = std::chrono::steady_clock::now();
  EXPECT_THROW(comms[0]->all_gather(&x, y, sizeof(int), {}), Error);
  EXPECT_LT(std::chrono::steady_clock::now() - t1, timeout);
}

TEST(CpuGroup, AllocateGivesAlignedWritableHostMemoryThatCollectivesAccept) {
  auto comms = make_cpu_group(2);
  run_ranks(2, [&](int r) {
    Communicator& c = *comms[static_cast<std::size_t>(r)];
    const std::unique_ptr<CommBuffer> b = c.allocate(1000);
    ASSERT_NE(b->data(), nullptr);
    EXPECT_EQ(b->bytes(), 1000u);
    EXPECT_FALSE(b->symmetric());
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(b->data()) % 256, 0u);
    auto* p = static_cast<int32_t*>(b->data());
    p[0] = 10 + r;
    c.all_gather(p, p + 1, sizeof(int32_t), {});
    EXPECT_EQ(p[1], 10);
    EXPECT_EQ(p[2], 11);
    EXPECT_EQ(c.allocate(0)->bytes(), 0u);
  });
}

TEST(CpuGroup, RejectsBadWorld) { EXPECT_THROW(make_cpu_group(0), Error); }

}  // namespace
}  // namespace mlakv::test
