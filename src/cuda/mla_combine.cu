// Combine kernel of mla_decode's split-KV schedule: merges the fp32 partials (o_s, lse_s) of each
// split request, LSE = log Σ exp(lse_s) with the maximum subtracted, and writes the rows of
// requests with no local token (o = 0, lse = −inf). It walks the scheduler's compact list of such
// requests, so a batch with nothing split costs one short launch; unsplit requests were written by
// the attention kernel.
#include <cuda_bf16.h>

#include <cstdlib>
#include <vector>

#include "mla_decode_common.cuh"
#include "mla_decode_trace.cuh"
#include "runtime.hpp"

namespace mlakv::cuda::mla {
namespace {

constexpr int kCombineThreads = 256, kCombineWarps = kCombineThreads / 32;
/// Partials each thread loads in its first round, together with the LSE values (64 registers
/// at four CTAs per SM leave room for six).
constexpr int kFirst = 6;

__device__ __forceinline__ void store2(const DecodeArgs& a, int64_t off, float x, float y) {
  if (a.out_f32) {
    float* d = static_cast<float*>(a.out) + off;
    if (a.out_vec) *reinterpret_cast<float2*>(d) = make_float2(x, y);
    else d[0] = x, d[1] = y;
  } else {
    __nv_bfloat16* d = static_cast<__nv_bfloat16*>(a.out) + off;
    const __nv_bfloat162 v = __floats2bfloat162_rn(x, y);
    if (a.out_vec) *reinterpret_cast<__nv_bfloat162*>(d) = v;
    else d[0] = v.x, d[1] = v.y;
  }
}

// The measurement build's stamps of combine CTAs 0–7 (%globaltimer: start, schedule, past the
// wait, the first item's LSE, its stores, end, the second item's LSE and stores), in this
// translation unit's own trace words.
#ifdef MLAKV_DECODE_TRACE
#define MLAKV_COMBINE_STAMP(ev)                                                                             \
  do {                                                                                                      \
    if (threadIdx.x == 0 && blockIdx.x < 8) g_decode_trace[blockIdx.x * 8 + (ev)] = trace_globaltimer(); \
  } while (0)
#else
#define MLAKV_COMBINE_STAMP(ev) ((void)0)
#endif

/// (max, Σ exp(x − max)) pairs, merged; −inf maxima (nothing seen) add nothing; a NaN one (a
/// partial that saw a NaN score) leaves the sum NaN, so the row reads NaN as in the reference.
__device__ __forceinline__ void lse_merge(float& m, float& s, float m2, float s2) {
  if (m2 == -INFINITY) return;
  if (m == -INFINITY) {
    m = m2, s = s2;
    return;
  }
  const float mx = fmaxf(m, m2);
  s = s * __expf(m - mx) + s2 * __expf(m2 - mx);
  m = mx;
}

// One wave of CTAs (gridDim.x ≤ 4 per SM) walks the work items (list entry, row, column slice of
// C = 512 / z) grid-stride: the number of entries is known only on the device, and a grid sized
// for the most there could be (every request split) launched waves of CTAs that found nothing to
// do after the attention grid (B=128 H=128: 8,448 CTAs, ~16 waves). One item merges one row's
// slice of one request. Thread t owns the float4 column group t % (C/4) of partial stream t / (C/4)
// (G = 1024 / C streams); stream g sums the partials i ≡ g (mod G), and the G streams meet in
// shared memory. The step is a chain of dependent loads, so it is cut short: the schedule's
// tables are read before pdl_wait (the schedule grid was complete before the attention grid
// triggered this launch: it waits for it first), and each thread's first kFirst partials are
// loaded together with the LSE values, so one round trip to L2 does most of the work.
__global__ void __launch_bounds__(kCombineThreads, 4) combine_kernel(const __grid_constant__ DecodeArgs a, int z) {
  __shared__ float4 acc_s[kCombineThreads];
  __shared__ float red_m[kCombineWarps], red_s[kCombineWarps];
  __shared__ int fused_tab[FusedTab::kInts];
  // The next step's first grid (a programmatic dependent: it waits for this grid before any
  // read) may be scheduled now, its launch under this grid's tail. Only where the step's first
  // grid is such a dependent (MLAKV_DECODE_PDL=inner keeps main's ordering for any successor).
  if (a.pdl_first) pdl_launch_dependents();
  if (threadIdx.x == 0) MLAKV_TRACE_STEP(kTsCombStart, false);
  MLAKV_COMBINE_STAMP(0);
  Schedule s = a.sched;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  if (a.fused) {
    // No schedule grid: the same schedule, computed here from seq_lens (before pdl_wait, as the
    // tables are read otherwise).
    s = FusedTab::at(s, fused_tab, fused_tab + FusedTab::kList);
    if (warp == 0) schedule_warp(a, s, a.parts);
    __syncthreads();
  }
  MLAKV_COMBINE_STAMP(1);
  const int C = 512 / z, tpg = C / 4, G = kCombineThreads / tpg, g = tid / tpg, c4 = tid - g * tpg;
  const int64_t split_stride = static_cast<int64_t>(a.rows) * 512;
  const int64_t per_entry = static_cast<int64_t>(a.rows) * z, items = s.header[2] * per_entry;
  int64_t w = blockIdx.x;
  int e = -1, b = 0, ns = 0, sb = 0;
  auto entry = [&](int e_new) {
    e = e_new;
    b = s.list[e];
    ns = s.ntiles[b] > 0 ? s.nsplit[b] : 0;
    sb = ns > 0 ? s.split_base[b] : 0;
  };
  if (w < items) entry(static_cast<int>(w / per_entry));
  pdl_wait();  // every partial comes from the attention grid
  if (threadIdx.x == 0) MLAKV_TRACE_STEP(kTsCombWaited, false);
  MLAKV_COMBINE_STAMP(2);
  for (; w < items; w += gridDim.x) {
    const int e_w = static_cast<int>(w / per_entry), rz = static_cast<int>(w - e_w * per_entry);
    if (e_w != e) entry(e_w);
    const int r = rz / z, z0 = (rz - r * z) * C, qi = r / a.heads, h = r - qi * a.heads;
    const int64_t obase = b * a.o_s0 + qi * a.o_s1 + h * a.o_s2;
    float* lse_out = a.lse + b * a.l_s0 + qi * a.l_s1 + h * a.l_s2;
    const float* pl = s.part_lse + static_cast<int64_t>(sb) * a.rows + r;
    const float* po = s.part_o + (static_cast<int64_t>(sb) * a.rows + r) * 512 + z0 + c4 * 4;

    float4 v[kFirst];
    float lv[kFirst];
#pragma unroll
    for (int k = 0; k < kFirst; ++k) {
      const int i = g + k * G;
      v[k] = i < ns ? *reinterpret_cast<const float4*>(po + i * split_stride) : make_float4(0.f, 0.f, 0.f, 0.f);
      lv[k] = i < ns ? pl[static_cast<int64_t>(i) * a.rows] : -INFINITY;
    }

    // LSE over the partials in one pass: per-thread (max, sum), then warps, then the CTA.
    float mx = -INFINITY, sm = 0.0f;
    for (int i = tid; i < ns; i += kCombineThreads) lse_merge(mx, sm, pl[static_cast<int64_t>(i) * a.rows], 1.0f);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float m2 = __shfl_xor_sync(0xffffffffu, mx, o), s2 = __shfl_xor_sync(0xffffffffu, sm, o);
      lse_merge(mx, sm, m2, s2);
    }
    if (lane == 0) red_m[warp] = mx, red_s[warp] = sm;
    __syncthreads();
    mx = red_m[0], sm = red_s[0];
#pragma unroll
    for (int wp = 1; wp < kCombineWarps; ++wp) lse_merge(mx, sm, red_m[wp], red_s[wp]);
    const float lse = mx != -INFINITY ? mx + __logf(sm) : -INFINITY;  // NaN stays NaN
    if (w == blockIdx.x) MLAKV_COMBINE_STAMP(3);
    if (w == blockIdx.x + gridDim.x) MLAKV_COMBINE_STAMP(6);

    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    auto add = [&](float l, const float4& x) {
      const float wt = __expf(l - lse);
      if (wt != 0.0f) {  // an empty partial (lse −inf) adds nothing, whatever its o holds
        acc.x += wt * x.x;
        acc.y += wt * x.y;
        acc.z += wt * x.z;
        acc.w += wt * x.w;
      }
    };
    if (lse != -INFINITY) {
#pragma unroll
      for (int k = 0; k < kFirst; ++k) add(lv[k], v[k]);
#pragma unroll 4
      for (int i = g + kFirst * G; i < ns; i += G)
        add(pl[static_cast<int64_t>(i) * a.rows], *reinterpret_cast<const float4*>(po + i * split_stride));
    }
    acc_s[tid] = acc;  // [stream g][column group c4]
    __syncthreads();
    if (2 * tid < C) {
      const float* col = reinterpret_cast<const float*>(acc_s) + 2 * tid;  // stream g at + g·C
      float x = 0.0f, y = 0.0f;
      for (int k = 0; k < G; ++k) {
        x += col[k * C];
        y += col[k * C + 1];
      }
      store2(a, obase + z0 + 2 * tid, x, y);
    }
    if (tid == 0 && z0 == 0) *lse_out = lse;
    __syncthreads();  // acc_s, red_m and red_s are reused by the next item
    if (w == blockIdx.x) MLAKV_COMBINE_STAMP(4);
    if (w == blockIdx.x + gridDim.x) MLAKV_COMBINE_STAMP(7);
  }
  if (threadIdx.x == 0) MLAKV_TRACE_STEP(kTsCombEnd, true);
  MLAKV_COMBINE_STAMP(5);
}

}  // namespace

#ifdef MLAKV_DECODE_TRACE
/// This translation unit's stamps (its own copy of the trace words: the combine's), then cleared;
/// read_decode_trace merges them: the step words, then CTAs 0–7's eight words each.
std::vector<uint64_t> read_combine_trace() {
  std::vector<uint64_t> v(kTraceStepWords + 64), zero(kTraceStepWords, 0), zero_cta(64, 0);
  const std::size_t off = sizeof(unsigned long long) * kTraceWords, n = sizeof(unsigned long long) * kTraceStepWords;
  check_cuda(cudaMemcpyFromSymbol(v.data(), g_decode_trace, n, off), "combine trace read");
  check_cuda(cudaMemcpyToSymbol(g_decode_trace, zero.data(), n, off), "combine trace clear");
  check_cuda(cudaMemcpyFromSymbol(v.data() + kTraceStepWords, g_decode_trace, 64 * 8), "combine trace read");
  check_cuda(cudaMemcpyToSymbol(g_decode_trace, zero_cta.data(), 64 * 8), "combine trace clear");
  return v;
}
#endif

void launch_combine(const DecodeArgs& a, int parts, int sms, cudaStream_t stream) {
  // At most parts − 1 requests are split; more entries (empty requests) are walked grid-stride.
  const int x = a.batch < parts ? a.batch : parts;
  // Column slices z: a work item has 2z partial streams, so the first round (kFirst partials per
  // thread) covers 2z · kFirst partials. Grow z while the first round falls short of the
  // ~parts / x + 1 segments a request has when few requests share the parts, or the items number
  // under two per SM, but keep them within one wave (four CTAs per SM, see __launch_bounds__):
  // each further item a CTA takes pays the whole chain of loads again (B=1 H=128 at z = 16: 2048
  // items, 30 µs).
  // B=1 H=16: z = 16 (256 items of 32 columns); B=1 H=128: z = 4; many requests: z = 1.
  const int64_t segs = parts / x + 2, rows = static_cast<int64_t>(x) * a.rows, wave = 4 * static_cast<int64_t>(sms);
  int z = 1;
  while (z < 16 && rows * 2 * z <= wave && (kFirst * 2 * z < segs || rows * z < 2 * static_cast<int64_t>(sms))) z *= 2;
  // MLAKV_DECODE_COMBINE_Z=1|2|…|64 sets it (a measurement switch).
  if (const char* e = std::getenv("MLAKV_DECODE_COMBINE_Z")) {
    const int v = std::atoi(e);
    if (v >= 1 && v <= 64 && (v & (v - 1)) == 0) z = v;
  }
  const int64_t ctas = rows * z < wave ? rows * z : wave;
  check_cuda(launch_maybe_pdl(a.pdl, combine_kernel, dim3(static_cast<unsigned>(ctas)), dim3(kCombineThreads), 0, stream, a, z),
             "mla_decode combine_kernel");
  check_launch("mla_decode combine_kernel");
}

}  // namespace mlakv::cuda::mla
