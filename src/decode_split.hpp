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

/// Units per part, and (stride > 0) where the requests start instead of their running sum:
/// request b at unit b·stride. From the requests' total and largest cost (`pad`):
/// - near-equal requests, more than parts (`several`): r = ⌈B / parts⌉ whole requests to a part,
///   each padded to the longest, within a quarter and kWholeSlack units of the balanced payload
///   (B=128 H=128 4K, 66 parts: 128 units against two requests' 132; the split's partials and
///   combine cost ~35 µs of a 420 µs step);
/// - no more than parts: one part per request, padded, within a quarter of the balanced payload
///   (B=128 ctx=4096 H=16: 66 units a request against a payload of 64, so nearly every request
///   was split). A split costs a second Q load and epilogue, a partial written and read back, and
///   the combine; the padding at most a quarter of a part's work, on the longest part only;
/// - (align_slack ≥ 0: the decode passes 2 unless MLAKV_DECODE_ALIGN says otherwise; −1 off) at
///   most half as many as parts: each request cut into k = ⌊parts / B⌋ equal segments aligned to
///   parts, ⌈pad / k⌉ units each, where that is within align_slack units of the balanced payload,
///   which starts most requests mid-part and so gives them k + 1 segments (bf16 B=32 H=128 8K:
///   three segments of a 130-unit request over 64-unit parts, two aligned).
struct Plan {
  int payload, stride;
};
MLAKV_SPLIT_FN Plan plan(int B, int parts, int total, int pad, bool several, int align_slack = -1) {
  const int payload = total > 0 ? (total + parts - 1) / parts : 1;
  if (pad <= 0) return Plan{payload, 0};
  if (B > parts) {
    const int r = (B + parts - 1) / parts;
    return several && r * pad - payload <= kWholeSlack && 4 * r * pad <= 5 * payload ? Plan{r * pad, pad}
                                                                                    : Plan{payload, 0};
  }
  const int k = parts / B, p = (pad + k - 1) / k;
  if (k == 1 ? 4 * p <= 5 * payload : align_slack >= 0 && p - payload <= align_slack) return Plan{p, k * p};
  return Plan{payload, 0};
}

}  // namespace mlakv::split
