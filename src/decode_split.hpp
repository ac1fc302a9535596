// The split-KV schedule's arithmetic in cost units, shared by the CUDA scheduler (device code)
// and host tests, so that the rules CI checks are the ones the GPU runs. A request of n tiles
// costs n + kSegmentCost units (0 without a local token); part p takes the tiles whose units lie
// in [p·payload, (p+1)·payload), tile t of request b sitting at unit first_b + kSegmentCost + t.
#pragma once

#if defined(__CUDACC__)
#define MLAKV_SPLIT_FN __host__ __device__ __forceinline__
#else
#define MLAKV_SPLIT_FN inline
#endif

namespace mlakv::split {

/// Cost of one request segment (Q load, epilogue, partial write) in tile units, charged so that
/// parts holding many short requests get fewer tiles.
inline constexpr int kSegmentCost = 2;
/// Several whole requests go to a part only within this many units of the balanced payload: at
/// 64K tokens two whole requests are 62 tiles over it, more than a split costs (+1 to +2 %
/// measured, session 22).
inline constexpr int kWholeSlack = 16;

MLAKV_SPLIT_FN int request_cost(int n) { return n > 0 ? n + kSegmentCost : 0; }

/// Segments (parts) of a request of n tiles whose first tile sits at cost unit `first`.
MLAKV_SPLIT_FN int segments(int n, int first, int payload) {
  return n > 0 ? (first + n - 1) / payload - first / payload + 1 : 0;
}

/// Near-equal requests: r = ⌈B / parts⌉ whole requests to a part, each padded to the longest
/// (cost units `pad`), instead of cutting most of them in two; returns r, or 0 to split. A split
/// costs a second Q load and epilogue, a partial written and read back, and the combine; the
/// padding costs at most a quarter of a part's work, on the longest part only. (B=128 ctx=4096
/// H=16: 66 cost units per request against a payload of 64, so nearly every request was split;
/// at H=128, 66 parts: 128 against two requests' 132, and the split's partials and combine cost
/// ~35 µs of a 420 µs step.) `several` false: r = 1 only.
MLAKV_SPLIT_FN int pad_requests(int B, int parts, int pad, int payload, bool several) {
  if (pad <= 0) return 0;
  const int r = (B + parts - 1) / parts;
  if (r == 1) return 4 * pad <= 5 * payload ? 1 : 0;
  return several && r * pad - payload <= kWholeSlack && 4 * r * pad <= 5 * payload ? r : 0;
}

/// Units per part, and (pad > 0) the units every request is padded to, request b then starting
/// at unit b·pad; from the requests' total and largest cost.
struct Plan {
  int payload, pad;
};
MLAKV_SPLIT_FN Plan plan(int B, int parts, int total, int max_cost, bool several) {
  const int payload = total > 0 ? (total + parts - 1) / parts : 1;
  const int r = pad_requests(B, parts, max_cost, payload, several);
  return r ? Plan{r * max_cost, max_cost} : Plan{payload, 0};
}

}  // namespace mlakv::split
