// A measurement build only (CMake -DMLAKV_DECODE_TRACE=ON): the decode kernels stamp clock64 and
// %globaltimer at the hand-offs of their first CTAs, so that a run shows where a tile's time goes
// per role (producer, each consumer warpgroup) and where a small step's fixed cost sits. In every
// other build the stamps compile to nothing.
#pragma once

#include <cstdint>

namespace mlakv::cuda::mla {

inline constexpr int kTraceCtas = 8;     ///< CTAs (blockIdx.x < 8, blockIdx.y == 0) that stamp
inline constexpr int kTraceRoles = 3;    ///< producer, consumer warpgroups 0 and 1
inline constexpr int kTraceTiles = 64;   ///< loop iterations k stamped per role (slot 63: CTA-wide)
inline constexpr int kTraceEvents = 8;
inline constexpr int kTraceWords = kTraceCtas * kTraceRoles * kTraceTiles * kTraceEvents;
/// Step-wide %globaltimer words after the per-CTA ones: the attention grid's last CTA end (the
/// latest of any CTA), the combine grid's first CTA start and its return from the programmatic
/// wait, and that grid's last CTA end; with the in-grid merge, the latest CTA to have stored its
/// partials, the latest arrival counted, the latest merger past its wait and the latest merger
/// done. The maxima hold the last launch's (later than any before).
enum TraceStep : int {
  kTsAttnEnd = 0,
  kTsCombStart = 1,
  kTsCombWaited = 2,
  kTsCombEnd = 3,
  kTsMergeStored = 4,
  kTsMergeArrived = 5,
  kTsMergeWoke = 6,
  kTsMergeDone = 7,
  kTraceStepWords = 8
};
inline constexpr int kTraceAllWords = kTraceWords + kTraceStepWords;

/// Slot 63's events (k = kTraceTiles − 1): globaltimer (ns) at these points, per role (ready: past
/// the barrier set-up and the register hand-over, about to seek its first tile).
enum TraceWide : int { kTrStart = 0, kTrScheduled = 1, kTrEnd = 2, kTrClockAtStart = 3, kTrSm = 4, kTrRoleReady = 5 };

#ifdef MLAKV_DECODE_TRACE
/// The last launch's stamps, [cta][role][k][event]; 0 = not stamped; then the step words. Each
/// translation unit that includes this has its own copy: mla_decode.cu's (the attention kernels',
/// read back by read_decode_trace) and mla_combine.cu's (the combine's, read_combine_trace).
static __device__ unsigned long long g_decode_trace[kTraceAllWords];

__device__ __forceinline__ unsigned long long trace_globaltimer() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
/// Word (role, k, ev) of this CTA's stamps, or nullptr where the CTA does not stamp.
__device__ __forceinline__ unsigned long long* trace_word(int role, int k, int ev) {
  if (blockIdx.x >= kTraceCtas || blockIdx.y != 0 || k < 0 || k >= kTraceTiles) return nullptr;
  return g_decode_trace + ((blockIdx.x * kTraceRoles + role) * kTraceTiles + k) * kTraceEvents + ev;
}
/// One stamp by the first thread of the calling warpgroup (role: 0 producer, 1/2 consumers).
__device__ __forceinline__ void trace_stamp(int role, int k, int ev) {
  if (k >= kTraceTiles - 1 || (threadIdx.x & 127) != 0) return;
  if (unsigned long long* w = trace_word(role, k, ev)) *w = static_cast<unsigned long long>(clock64());
}
/// One of two alternative events of a tile: the other's slot is cleared (a stale stamp from an
/// earlier launch would otherwise pair with this launch's).
__device__ __forceinline__ void trace_stamp_either(int role, int k, int ev, int other) {
  if (k >= kTraceTiles - 1 || (threadIdx.x & 127) != 0) return;
  if (unsigned long long* w = trace_word(role, k, ev)) {
    *w = static_cast<unsigned long long>(clock64());
    w[other - ev] = 0;
  }
}
/// A step-wide stamp: the latest (max) or this CTA's (CTA 0 only) %globaltimer.
__device__ __forceinline__ void trace_step(int word, bool latest) {
  if (latest) atomicMax(g_decode_trace + kTraceWords + word, trace_globaltimer());
  else if (blockIdx.x == 0 && blockIdx.y == 0) g_decode_trace[kTraceWords + word] = trace_globaltimer();
}
__device__ __forceinline__ void trace_wide(int role, int ev) {
  if (ev == kTrEnd) trace_step(kTsAttnEnd, true);
  unsigned long long* w = trace_word(role, kTraceTiles - 1, ev);
  if (!w) return;
  unsigned long long v = trace_globaltimer();
  if (ev == kTrClockAtStart) v = static_cast<unsigned long long>(clock64());
  if (ev == kTrSm) {
    unsigned sm;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
    v = sm;
  }
  *w = v;
}
#define MLAKV_TRACE(role, k, ev) ::mlakv::cuda::mla::trace_stamp(role, k, ev)
/// A stamp once `value` (a 64-bit register) is known: its loads have landed.
#define MLAKV_TRACE_AFTER(role, k, ev, value)                  \
  do {                                                         \
    asm volatile("" ::"l"(value));                             \
    ::mlakv::cuda::mla::trace_stamp(role, k, ev);              \
  } while (0)
#define MLAKV_TRACE_EITHER(role, k, ev, other) ::mlakv::cuda::mla::trace_stamp_either(role, k, ev, other)
#define MLAKV_TRACE_WIDE(role, ev) ::mlakv::cuda::mla::trace_wide(role, ev)
#define MLAKV_TRACE_STEP(word, latest) ::mlakv::cuda::mla::trace_step(word, latest)
#else
#define MLAKV_TRACE(role, k, ev) ((void)0)
#define MLAKV_TRACE_AFTER(role, k, ev, value) ((void)0)
#define MLAKV_TRACE_EITHER(role, k, ev, other) ((void)0)
#define MLAKV_TRACE_WIDE(role, ev) ((void)0)
#define MLAKV_TRACE_STEP(word, latest) ((void)0)
#endif

}  // namespace mlakv::cuda::mla
