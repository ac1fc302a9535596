// The split-KV schedule's cost arithmetic (src/decode_split.hpp) as the CUDA scheduler runs it,
// checked on the host: every tile in exactly one existing part, the segment count right, and
// near-equal requests whole where the rule says so.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>
#include <vector>

#include "decode_split.hpp"

namespace {

using namespace mlakv::split;

struct Placed {
  Plan plan{};
  int parts_used = 0;  ///< parts holding at least one tile
  int split = 0;       ///< requests over more than one part
  int most = 0;        ///< the most parts one request is over
};

/// The scheduler's placement of requests of `tiles[b]` tiles over `parts` parts.
Placed place(const std::vector<int>& tiles, int parts, bool several, int align_slack = -1) {
  const int B = static_cast<int>(tiles.size());
  int total = 0, max_cost = 0;
  for (int n : tiles) total += request_cost(n), max_cost = std::max(max_cost, request_cost(n));
  Placed r;
  r.plan = plan(B, parts, total, max_cost, several, align_slack);
  std::set<int> used;
  int first = 0;
  for (int b = 0; b < B; ++b) {
    const int f = r.plan.stride ? b * r.plan.stride : first;
    std::set<int> mine;
    for (int t = 0; t < tiles[b]; ++t) {
      const int part = (f + kSegmentCost + t) / r.plan.payload;
      EXPECT_LT(part, parts) << "request " << b << " tile " << t;
      mine.insert(part);
    }
    EXPECT_EQ(segments(tiles[b], f + kSegmentCost, r.plan.payload), static_cast<int>(mine.size())) << "request " << b;
    used.insert(mine.begin(), mine.end());
    r.split += mine.size() > 1;
    r.most = std::max(r.most, static_cast<int>(mine.size()));
    first += request_cost(tiles[b]);
  }
  r.parts_used = static_cast<int>(used.size());
  return r;
}

TEST(DecodeSplit, NearEqualRequestsGoTwoWholeToAPart) {
  // bf16 B=128 H=128 ctx=4096 on 132 SMs: 66 parts of CTA pairs, 64 tiles a request.
  const Placed p = place(std::vector<int>(128, 64), 66, true);
  EXPECT_EQ(p.plan.stride, 66);
  EXPECT_EQ(p.plan.payload, 132);
  EXPECT_EQ(p.split, 0);
  EXPECT_EQ(p.parts_used, 64);
}

TEST(DecodeSplit, WithoutSeveralTheyAreSplit) {
  const Placed p = place(std::vector<int>(128, 64), 66, false);
  EXPECT_EQ(p.plan.stride, 0);
  EXPECT_EQ(p.plan.payload, 128);
  EXPECT_GT(p.split, 60);
  EXPECT_EQ(p.parts_used, 66);
}

TEST(DecodeSplit, LongRequestsBeyondTheSlackStaySplit) {
  // ctx=65536: two padded requests would be 2,052 units against a balanced 1,990.
  const Placed p = place(std::vector<int>(128, 1024), 66, true);
  EXPECT_EQ(p.plan.stride, 0);
  EXPECT_EQ(p.parts_used, 66);
}

TEST(DecodeSplit, OneWholeRequestPerPartWithinAQuarter) {
  // bf16 B=128 H=16 ctx=4096: 132 parts, one request each (4 idle).
  Placed p = place(std::vector<int>(128, 64), 132, false);
  EXPECT_EQ(p.plan.stride, 66);
  EXPECT_EQ(p.plan.payload, 66);
  EXPECT_EQ(p.split, 0);
  EXPECT_EQ(p.parts_used, 128);
  // Unequal requests: one of 64 tiles among 1-tile ones is over a quarter above the balanced part.
  std::vector<int> uneven(100, 1);
  uneven[7] = 64;
  p = place(uneven, 132, true);
  EXPECT_EQ(p.plan.stride, 0);
  EXPECT_GT(p.split, 0);
}

TEST(DecodeSplit, AlignedSplitsGiveEachRequestPartsOfItsOwn) {
  // bf16 B=32 H=128 ctx=8192: 66 parts, 130 units a request. Balanced: 64-unit parts, most
  // requests over three of them; aligned: two parts each, 65 units.
  Placed p = place(std::vector<int>(32, 128), 66, true);
  EXPECT_EQ(p.plan.stride, 0);
  EXPECT_EQ(p.plan.payload, 64);
  EXPECT_EQ(p.most, 3);
  p = place(std::vector<int>(32, 128), 66, true, 2);
  EXPECT_EQ(p.plan.payload, 65);
  EXPECT_EQ(p.plan.stride, 130);
  EXPECT_EQ(p.most, 2);
  EXPECT_EQ(p.split, 32);
  EXPECT_EQ(p.parts_used, 64);
  // Off by default, and not beyond the slack: at 64K, 513 units against a balanced 498.
  EXPECT_EQ(place(std::vector<int>(32, 1024), 66, true, 2).plan.stride, 0);
  EXPECT_EQ(place(std::vector<int>(32, 1024), 66, true, 16).plan.stride, 1026);
}

TEST(DecodeSplit, EveryTileLandsInOneExistingPart) {
  std::mt19937 rng(7);
  for (int round = 0; round < 400; ++round) {
    const int B = 1 + static_cast<int>(rng() % 300), parts = 1 + static_cast<int>(rng() % 200);
    const int spread = 1 + static_cast<int>(rng() % 64), base = static_cast<int>(rng() % 200);
    std::vector<int> tiles(static_cast<std::size_t>(B));
    for (int& n : tiles) n = rng() % 9 == 0 ? 0 : base + static_cast<int>(rng() % static_cast<unsigned>(spread));
    for (bool several : {false, true})
      for (int align : {-1, 2, 16}) {
        const Placed p = place(tiles, parts, several, align);  // asserts inside
        if (p.plan.stride && B > parts / 2) EXPECT_EQ(p.split, 0) << "B " << B << " parts " << parts;
        EXPECT_LE(p.parts_used, parts);
      }
  }
}

}  // namespace
