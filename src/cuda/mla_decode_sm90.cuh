// MLA decode attention kernel for Hopper (sm_90a): wgmma with the operands swapped.
//
// Decode MLA is MQA with few query rows per request (heads · s_q: 16 to 128) against 64-token KV
// tiles. Putting the rows in wgmma's M dimension (64) wastes 3/4 of the tensor work at 16 heads,
// which makes the memory-bound shapes tensor-bound. So the tile's tokens are M instead:
//   Sᵀ[64 tok × n]   = K[64 × 576] · Qᵀ          A = K tile (K-major), B = Q rows (K-major)
//   Oᵀ[512 × n]     += Vᵀ[512 × 64 tok] · Pᵀ      A = the same tile read MN-major (V = first 512
//                                                  dims: no second load), B = P (bf16, smem)
// with n = NW query rows per consumer warpgroup (8, 16 or 32), so no tensor work is padding.
//
// CTA = 3 warpgroups, one per SM:
//   WG0 producer: walks the part's tiles (the split-KV schedule of mla_decode_schedule.cu),
//        looks each token's block up once, and streams 64 × 1152-byte token rows with 16-byte
//        cp.async into a 2-stage ring laid out in the 128-byte swizzle wgmma reads; masked tokens
//        (past the end, bad block ids) are zero-filled, never read. Completion is signalled on a
//        "full" mbarrier by cp.async.mbarrier.arrive, so loads stay in flight without the producer
//        waiting on them.
//   WG1, WG2 consumers: each owns NW of the CTA's 2·NW rows and all 512 output columns, so the
//        two never exchange softmax state; they share the KV stage and the Q tile. Per tile:
//        36 wgmma for Sᵀ, mask + online softmax in registers (row maxima across the 4 warps
//        through shared memory), P to shared memory as bf16, 32 wgmma for Oᵀ, release the stage.
//   ALT (bf16 and fp8, 16 or 32 rows per CTA): the two consumer warpgroups take alternate tiles
//        (tile k and stage k & 1 belong to warpgroup k & 1), each with all of the CTA's rows as n:
//        half the wgmma per tile of the split-rows form, each twice as wide (a wgmma costs ~17
//        clocks plus n/2: docs/perf/decode-notes.md), and one warpgroup's softmax overlaps the
//        other's wgmma. Each keeps its own (m, l, o) over a request's tiles; at the request's end
//        warpgroup 1 hands its state to warpgroup 0 through shared memory, which merges and writes
//        (fp8 and 32 rows: through the Q tile, in two halves, for lack of room beside the raw ring
//        or the 32-row o).
//   RM (bf16, 64 rows per CTA, the default there): the rows-as-M seesaw — query rows as M,
//        Q·Kᵀ as m64n64k16 by the two consumer warpgroups on alternate tiles, each warpgroup
//        half of the 512 output columns for every tile (m64n256k16, P from registers); about
//        40 % fewer shared-memory operand bytes per tile than the split-rows form.
//   FP8: raw half tiles land in a cp.async ring; each producer thread widens exactly the bytes it
//        copied (prmt / shift / mask to bf16 · 2^-120, one exact bf16x2 multiply by 2^120) into
//        the swizzled bf16 stage the consumers read.
//        fp8_ds_mla at 16 rows (MLAKV_DECODE_FP8_FORM=widen): the producer widens each tile's
//        first half and the warpgroup that owns the tile its second half, with "landed" / "free"
//        barriers on the ring.
//   RS (the default for fp8 at 16 and 32 rows and fp8_ds_mla at 16; MLAKV_DECODE_FP8_FORM=widen
//        for the above): no widened stage. The producer copies raw tiles into a ring of five
//        stages (four at 32 rows and for fp8_ds_mla); each consumer converts what it reads into
//        wgmma A registers in fp16: K (Q·Kᵀ) by cvt e4m3x2 → f16x2 in a permuted k order
//        (load_q_rows_f16 stores Q to match, each row scaled into fp16's range), Vᵀ (P·V) by a
//        prmt pairing two tokens' bytes and the same cvt, with permuted output columns and P's
//        tokens; ~140 KB of shared-memory traffic a tile instead of ~334 KB, and no producer pace.
//        fp8_ds_mla: Q·Kᵀ per tile-scale group into two accumulators in turn, each scaled into
//        the scores once complete; the bf16 rope as bf16 operands; each warp's Vᵀ (its output
//        columns lie in one scale group) times the tokens' scales over a per-tile reference.
#pragma once

#include <cuda_bf16.h>

#include <cfloat>
#include <climits>
#include <cstdint>

#include "e4m3_alu.hpp"
#include "mla_decode_common.cuh"
#include "mla_decode_kernel.cuh"
#include "mla_decode_trace.cuh"

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define MLAKV_SM90A_DEVICE 1
#else
#define MLAKV_SM90A_DEVICE 0
#endif

namespace mlakv::cuda::mla {

inline constexpr int kSm90Threads = 384;
inline constexpr int kSm90Stages = 2;
inline constexpr int kStageBytes = kTile * 1152;  // 9 column blocks of 64 dims × 64 tokens × 128 B
/// fp8_ds_mla's fp16 stage (CTA pairs) holds scale · value · 2^-kF16Shift (Q's bf16 rope takes
/// the same factor), given back in the softmax and output scaling: latent values keep fp16's full
/// precision over [2^-10, 2^20) in magnitude (below, a fixed step of 2^-20; scales under 2^-18,
/// groups whose largest value is under 1.7e-3, round to fp16's subnormal steps) and overflow to
/// ±inf from 65504 · 2^4 ≈ 1.05e6.
inline constexpr int kF16Shift = 4;
// Lazy rescaling in the register-operand form (0, for A/B builds: every tile's row maxima
// exchanged): a tile whose scores all lie within 2^kLazyTau of the running maxima takes P on
// those maxima as they are, with no exchange, no barrier for it and no rescale of o or l. The
// default since session 33: fp8 at 32 rows 9-10 % faster on an H100, the rest within ±2.4 %.
#ifndef MLAKV_DECODE_LAZY
#define MLAKV_DECODE_LAZY 1
#endif
inline constexpr bool kLazyRescale = MLAKV_DECODE_LAZY != 0;
inline constexpr float kLazyTau = 8.0f;
/// The register-operand fp8 form stores P (≤ 1; lazy: ≤ 2^kLazyTau) in fp16 times this, the
/// largest that keeps P below fp16's 65504 (2^15): values down to 2^-39 (lazy: 2^-31) of the
/// reference stay nonzero (2^-24 unscaled).
inline constexpr float kPScaleRs = kLazyRescale ? 128.0f : 32768.0f;

/// Query rows per CTA of the sm90 kernel (2 warpgroups × NW). FP8 caches need room for a raw
/// staging ring, so they use fewer rows per CTA (fp8_ds_mla at 32 rows: split rows, each
/// warpgroup with four scaled P tiles, and a raw ring of quarter tiles).
/// bf16's cap: 64 (the split-rows form), or 32 (alternating tiles, each CTA loading every tile)
/// where MLAKV_DECODE_CTA_ROWS=32 asks for it (mla_decode.cu).
/// FP8 caches at 64 rows per CTA: the rows-as-M form in CTA pairs, each CTA widening half of every
/// tile into both, where a request's rows fill an even number of 64-row tiles (H=128) and
/// MLAKV_DECODE_CLUSTER / MLAKV_DECODE_FORM do not turn pairs or the form off (mla_decode.cu).
/// fp8_ds_mla's pairs (opt-in: MLAKV_DECODE_CLUSTER=fp16) hold scale · value in fp16
/// (kF16Shift): rounded to bf16 instead, the lse errors measured 4.1–6.4e-3 against the format's
/// 4e-3 (session 17); in fp16 3e-4 – 1.1e-3 on ordinary queries, ~0.1 where a query channel is
/// 1000× the rest (session 19), hence not the default.
int sm90_bf16_rows_cap();
bool sm90_fp8_pairs(int rows, CacheFormat f, int dev);
inline int sm90_rows_per_cta(int rows, CacheFormat f, int dev) {
  const int cap = f == CacheFormat::bf16 ? sm90_bf16_rows_cap() : sm90_fp8_pairs(rows, f, dev) ? 64 : 32;
  const int r = rows <= 16 ? 16 : rows <= 32 ? 32 : 64;
  return r < cap ? r : cap;
}
inline int sm90_mtiles(int rows, CacheFormat f, int dev) {
  const int r = sm90_rows_per_cta(rows, f, dev);
  return (rows + r - 1) / r;
}

template <CacheFormat F, int NW, bool ALT = false, bool RS = false> struct Sm90Smem {
  static constexpr bool kWiden = F != CacheFormat::bf16;
  // RS (alternating tiles; fp8 at 16 and 32 rows, fp8_ds_mla at 16): no widened stage. The
  // stages hold the raw tiles (fp8: 64 tokens × 576 bytes, each token's 16-byte chunk c at
  // c ^ (token & 3)), and the consumers
  // convert what they read straight into wgmma A registers, in fp16 (cvt e4m3x2 → f16x2: exact),
  // with Q's rows scaled by powers of two into fp16's range and P times 2^15.
  // At 32 rows (NW = 16, n = 32) the Q tile is twice as large: four stages.
  // fp8_ds_mla (16 rows, kDsRs): tokens 704 bytes apart (the 656-byte token: 512 e4m3, four fp32
  // tile scales, 64 bf16 rope; 44 chunks keep the 576-byte pitch's 4 mod 8 bank pattern), chunk c
  // at c ^ (token & 3); four stages.
  static constexpr bool kDsRs = RS && F == CacheFormat::fp8_ds_mla;
  static_assert(!RS || ((F == CacheFormat::fp8 && NW <= 16) || (kDsRs && NW == 8)) && ALT,
                "register operands: fp8 at 16 or 32 rows, fp8_ds_mla at 16, alternating tiles");
  static constexpr int kStages = RS ? (NW == 8 && !kDsRs ? 5 : 4) : kSm90Stages;
  static constexpr int kRsPitch = kDsRs ? 704 : 576;
  static constexpr int kStBytes = RS ? kTile * kRsPitch : kStageBytes;
  // fp8_ds_mla at 64 rows (rows as M, CTA pairs) holds scale · value in an fp16 stage (kF16Stage),
  // so its tile scales never reach the consumers; at 16 and 32 rows the widened stage holds the
  // exact e4m3 values in bf16 and the consumers apply the tile scales (kTileScales); the
  // register-operand form (kDsRs) reads them from its raw stage.
  static constexpr bool kF16Stage = F == CacheFormat::fp8_ds_mla && NW == 32;
  static constexpr bool kTileScales = F == CacheFormat::fp8_ds_mla && !kF16Stage && !RS;
  static constexpr int NR = ALT ? 2 * NW : NW;         // rows of one consumer warpgroup's wgmma (n)
  static constexpr int kTokenBytes = Fmt<F>::kTokenBytes;
  // fp8_ds_mla: P scaled by each 128-column tile scale, two at a time (P · V in two passes),
  // which leaves room for more raw slots.
  static constexpr int kPTiles = kTileScales ? 2 : 1;
  static constexpr int kQBytes = 9 * 2 * NW * 128;     // [9 column blocks][2·NW rows][128 B]
  static constexpr int kPBytes = NR * 128;             // one P: [NR rows][64 tokens] bf16
  static constexpr int kRedBytes = 2 * 2 * 4 * NR * 4;  // [wg][parity][warp][row] floats
  // ALT: warpgroup 1's o ([8][NR/2][128 threads] floats), m and l ([NR] each) for the merge.
  // FP8 (beside its raw ring) and 32 rows have no room for it: there it lies in the Q tile (free
  // once both warpgroups are past the request's last Q·Kᵀ) and o crosses in kXRounds halves.
  static constexpr bool kXInQ = ALT && (kWiden || NW > 8);
  static constexpr int kXRounds = kXInQ ? 2 : 1;
  static constexpr int kXBytes = ALT ? 8 * (NR / 2) * 128 * 4 / kXRounds + 2 * NR * 4 : 0;
  static constexpr int kQ = kStages * kStBytes;
  static constexpr int kP = kQ + kQBytes;
  static constexpr int kRed = kP + 2 * kPTiles * kPBytes;
  static constexpr int kOk = kRed + kRedBytes;         // [stage][64] token-valid flags
  static constexpr int kQf = kOk + kStages * kTile;   // RS: [2·NW] each Q row's factor 2^-σ (load_q_rows_f16)
  static constexpr int kScl = kQf + (RS ? 8 * NW : 0);  // [stage][64][4] fp8_ds_mla tile scales
  // kDsRs: [warpgroup][warp][32] fp16 pairs, each token's tile scale over its warp's P·V reference
  // (the Vᵀ registers' factors, one tile at a time).
  static constexpr int kVr = kScl + (kTileScales ? kSm90Stages * kTile * 16 : 0);
  static constexpr int kSclEnd = kVr + (kDsRs ? 2 * 4 * 32 * 4 : 0);
  static constexpr int kX = kXInQ ? kQ : kSclEnd;
  // fp8_ds_mla at 16 rows (ALT): the warpgroup that owns a tile widens its second half itself,
  // from the raw ring, while the producer widens the first (the session-8 trace: the producer
  // spent ~4,400 clocks widening each tile while the owner waited ~5,600 for it; 7 % faster).
  // The ring's units then have "landed" and "free" barriers (the owner cannot wait on the
  // producer's cp.async groups), and an even slot count keeps each slot to one side (an odd
  // one made a warpgroup wait for the producer's half of the previous tile). Not for fp8: there
  // the two widening sides and the other warpgroup's compute share the schedulers' issue slots,
  // and the tile time did not move (docs/perf/decode-notes.md, session 8).
  static constexpr bool kOwnerWidens = kTileScales && ALT && NW == 8;
  static constexpr int kBar = kSclEnd + (kXInQ ? 0 : kXBytes);
  static constexpr int kSch = kBar + (kOwnerWidens || RS ? 128 : 64);  // fused path: the CTA's own schedule
  static constexpr int kRaw = kSch + FusedTab::kAttnInts * 4;  // raw FP8 units (parts of a tile) in flight
  // A unit is half a tile, or for fp8_ds_mla at 32 rows (704-byte raw tokens beside the larger
  // Q tile) a quarter tile, which fits two slots where two half tiles do not.
  static constexpr int kUnitTokens = kTileScales && NW >= 16 ? 16 : 32;
  // Token pitch in the raw ring: an odd number of 16-byte chunks mod 8 (656 bytes = 41 chunks)
  // puts two tokens' reads on the same banks; 4 mod 8 (fp8's 576 = 36, fp8_ds_mla padded to 704
  // = 44) puts the two tokens of a quarter warp on disjoint halves.
  static constexpr int kRawPitch = kTileScales ? 704 : kTokenBytes;
  static constexpr int kRawSlotBytes = kUnitTokens * kRawPitch;
  // fp8 at 64 rows (rows as M, CTA pairs): no room for a raw ring beside the 72 KB Q tile; the
  // producer widens from registers.
  static constexpr bool kRawRing = kWiden && NW < 32 && !RS;
  static constexpr int bytes_for(int slots) { return kRaw + (kRawRing ? slots * (kRawSlotBytes + kUnitTokens) : 0); }
  static constexpr int raw_slots() {
    if (!kRawRing) return 0;
    int n = 2 * kTile / kUnitTokens;
    while (n > 2 && (bytes_for(n) > 232448 || (kOwnerWidens && n % 2 != 0))) --n;
    return n;
  }
  static constexpr int kRawSlots = raw_slots();
  static_assert(!kOwnerWidens || (kRawSlots <= 4 && kTile / kUnitTokens == 2), "raw barriers: 64 + 16·slots bytes, half-tile units");
  static constexpr int kRawOk = kRaw + kRawSlots * kRawSlotBytes;  // [slot][kUnitTokens]
  static constexpr int kBytes = bytes_for(kRawSlots);
  static_assert(kBytes <= 232448, "sm90 decode shared-memory plan does not fit");
  static_assert(kQ % 1024 == 0 && kP % 1024 == 0 && kPBytes % 1024 == 0 && kX % 16 == 0 && kOk % 16 == 0 &&
                    kBar % 8 == 0 && kRaw % 16 == 0,
                "alignment");
  static_assert(!ALT || NW <= 16, "alternating tiles: 16 or 32 rows per CTA");
  static_assert(!kXInQ || kXBytes <= kQBytes, "the merge buffer must fit in the Q tile");
};

#if MLAKV_SM90A_DEVICE
namespace sm90 {

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count));
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
/// Arrives at the mbarrier at `bar`'s offset in CTA `rank` of the cluster; relaxed: what must
/// precede it is ordered by fence_release_cluster() before (a release arrive at cluster scope
/// compiles to a GPU-wide membar: CUTLASS's practice, and the PTX ISA's own fence examples).
__device__ __forceinline__ void mbar_arrive_remote(uint32_t bar, uint32_t rank) {
  asm volatile("mbarrier.arrive.relaxed.cluster.shared::cluster.b64 _, [%0];\n" ::"r"(cluster_map(bar, rank)) : "memory");
}
/// This thread's shared-memory accesses (and the local arrivals after them) before its later
/// cluster-scope arrivals, without a GPU-wide membar.
__device__ __forceinline__ void fence_release_cluster() {
  asm volatile("fence.release.sync_restrict::shared::cta.cluster;\n" ::: "memory");
}
/// Arrives, and adds `bytes` to what the phase waits for (the TMA copies that complete on it).
__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
/// Arrives when every cp.async this thread issued so far has landed (counts as one arrival).
__device__ __forceinline__ void mbar_arrive_cp_async(uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
/// Waits for the phase of `bar` with this parity. kCluster: acquires what other CTAs of the
/// cluster released by arriving at `bar` (or completing bytes on it), by a relaxed wait and then
/// a fence restricted to shared memory (an acquire wait at cluster scope invalidates the whole L1
/// each time).
template <bool kCluster = false> __device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    if constexpr (kCluster)
      asm volatile(
          "{\n.reg .pred p;\nmbarrier.try_wait.parity.relaxed.cluster.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
          : "=r"(done)
          : "r"(bar), "r"(parity)
          : "memory");
    else
      asm volatile(
          "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
          : "=r"(done)
          : "r"(bar), "r"(parity)
          : "memory");
  } while (!done);
  if constexpr (kCluster) asm volatile("fence.acquire.sync_restrict::shared::cluster.cluster;\n" ::: "memory");
}
/// Whether the phase of `bar` with this parity has completed (no waiting).
__device__ __forceinline__ bool mbar_test(uint32_t bar, uint32_t parity) {
  uint32_t done;
  asm volatile(
      "{\n.reg .pred p;\nmbarrier.test_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
      : "=r"(done)
      : "r"(bar), "r"(parity)
      : "memory");
  return done != 0;
}
__device__ __forceinline__ void named_sync(int id, int count) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}
/// Arrives at named barrier `id` without waiting (its other threads wait there in bar.sync): a
/// signal whose shared-memory writes before it the waiters see.
__device__ __forceinline__ void named_arrive(int id, int count) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}
/// Orders this thread's generic-proxy shared-memory accesses with the async proxy (wgmma).
__device__ __forceinline__ void fence_async_smem() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
__device__ __forceinline__ void wg_wait1() { asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory"); }
__device__ __forceinline__ void wg_wait2() { asm volatile("wgmma.wait_group.sync.aligned 2;\n" ::: "memory"); }

/// Whether v holds for any thread of the warpgroup (bar.red.or on named barrier id, 128 threads).
__device__ __forceinline__ bool wg_any(int id, bool v) {
  uint32_t r;
  asm volatile("{\n.reg .pred p, q;\nsetp.ne.u32 p, %1, 0;\nbar.red.or.pred q, %2, 128, p;\nselp.u32 %0, 1, 0, q;\n}\n"
               : "=r"(r)
               : "r"(static_cast<uint32_t>(v)), "r"(id)
               : "memory");
  return r != 0;
}
/// A bf16 pair times f, rounded once (in fp32).
__device__ __forceinline__ uint32_t scale_bf16x2(uint32_t v, float f) {
  return pack_bf16(__uint_as_float(v << 16) * f, __uint_as_float(v & 0xffff0000u) * f);
}
/// 2^x by the SFU alone (ex2.approx.ftz: a relative error near 2^-22, results under 2^-126 flushed
/// to 0): exp2f adds a range test and two predicated multiplies per call, for subnormal results
/// that a softmax whose P is rounded to bf16 drops anyway.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
/// Four e4m3 values (bytes of x) → four bf16 (two bf16x2 words, value 0 in the low half of .x),
/// exactly: e4m3_alu's integer path (the bf16 of the value times 2^-120) and one exact bf16x2
/// multiply by 2^120, 4 integer/FMA-pipe instructions per pair.
__device__ __forceinline__ uint2 e4m3x4_to_bf16x4(uint32_t x) {
  uint32_t lo, hi;
  e4m3_alu::e4m3x4_to_bf16x2x2_scaled(x, lo, hi);
  const uint32_t two120 = 0x7b807b80u, neg0 = 0x80008000u;  // bf16x2 2^120, -0 (x + -0 = x)
  asm("fma.rn.bf16x2 %0, %0, %1, %2;\n" : "+r"(lo) : "r"(two120), "r"(neg0));
  asm("fma.rn.bf16x2 %0, %0, %1, %2;\n" : "+r"(hi) : "r"(two120), "r"(neg0));
  return make_uint2(lo, hi);
}

/// Four e4m3 values (bytes of x) → four fp16 values times the fp16 pair s2, each rounded once:
/// e4m3_alu's integer path (the fp16 of the value times 2^-8, exact) and one f16x2 multiply by s2,
/// which carries the 2^8 back.
__device__ __forceinline__ uint2 e4m3x4_to_f16x4_scaled(uint32_t x, uint32_t s2) {
  uint32_t lo, hi;
  e4m3_alu::e4m3x4_to_f16x2x2_scaled(x, lo, hi);
  asm("mul.rn.f16x2 %0, %0, %1;\n" : "+r"(lo) : "r"(s2));
  asm("mul.rn.f16x2 %0, %0, %1;\n" : "+r"(hi) : "r"(s2));
  return make_uint2(lo, hi);
}
/// Two floats → fp16x2 bits (lo in the low half), rounded to nearest even.
__device__ __forceinline__ uint32_t pack_f16(float lo, float hi) {
  uint32_t r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
/// An fp16 pair times f, rounded once (in fp32).
__device__ __forceinline__ uint32_t scale_f16x2(uint32_t v, float f) {
  const float2 x = __half22float2(*reinterpret_cast<const __half2*>(&v));
  return pack_f16(x.x * f, x.y * f);
}
/// A bf16 pair → the fp16 pair of the same values (exact within fp16's range: 8 significant bits
/// into 11).
__device__ __forceinline__ uint32_t bf16x2_to_f16x2(uint32_t v) { return pack_f16(__uint_as_float(v << 16), __uint_as_float(v & 0xffff0000u)); }

/// Keeps the compiler from moving accumulator reads or writes across wgmma issue / wait.
template <int N> __device__ __forceinline__ void pin(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
/// K accumulators set to zero and pinned before the wgmma chain that fills them.
template <int K, int N> __device__ __forceinline__ void zero_pinned(float (&d)[K][N]) {
#pragma unroll
  for (int c = 0; c < K; ++c) {
#pragma unroll
    for (int i = 0; i < N; ++i) d[c][i] = 0.0f;
    pin(d[c]);
  }
}

/// Shared-memory matrix descriptor, 128-byte swizzle. K-major: rows 128 B apart, 8-row groups
/// `sbo` apart (lbo unused). MN-major: `lbo` between 64-element blocks along M/N, `sbo` between
/// 8-row groups along K.
__device__ __forceinline__ uint64_t desc_sw128(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return static_cast<uint64_t>((addr & 0x3ffff) >> 4) | (static_cast<uint64_t>(lbo >> 4) << 16) |
         (static_cast<uint64_t>(sbo >> 4) << 32) | (1ull << 62);
}

/// The descriptor of an address `bytes` past d's: only the 14-bit address field changes (shared
/// memory lies below 256 KB, so it cannot carry), one 32-bit add instead of rebuilding the
/// descriptor (the uniform-datapath work per wgmma was ~30 % of the consumers' instructions).
__device__ __forceinline__ uint64_t desc_plus(uint64_t d, uint32_t bytes) {
  const uint32_t lo = static_cast<uint32_t>(d) + (bytes >> 4);
  return (d & 0xffffffff00000000ull) | lo;
}

/// D[64 × n] (+)= A · B, bf16 in, fp32 accumulate; TA = 1 reads A MN-major (transposed).
template <int N, int TA> struct Mma;
template <int TA> struct Mma<8, TA> {
  static __device__ __forceinline__ void run(float (&d)[4], uint64_t a, uint64_t b, int acc) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %6, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 {%0,%1,%2,%3}, %4, %5, p, 1, 1, %7, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "l"(a), "l"(b), "r"(acc), "n"(TA));
  }
};
template <int TA> struct Mma<16, TA> {
  static __device__ __forceinline__ void run(float (&d)[8], uint64_t a, uint64_t b, int acc) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %10, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7}, %8, %9, p, 1, 1, %11, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
        : "l"(a), "l"(b), "r"(acc), "n"(TA));
  }
};
template <int TA> struct Mma<32, TA> {
  static __device__ __forceinline__ void run(float (&d)[16], uint64_t a, uint64_t b, int acc) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 "
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, %16, %17, p, 1, 1, %19, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
        : "l"(a), "l"(b), "r"(acc), "n"(TA));
  }
};

/// D[64 × N] (+)= A · B with A (fp16 pairs in the m64k16 fragment order) from registers and B
/// K-major from shared memory, fp16: the register-operand form's Q·Kᵀ (A = K) and P·V (A = Vᵀ),
/// N = 16 or 32 query rows; kBf16: bf16 operands (fp8_ds_mla's rope).
#define MLAKV_MMA_RS16(T) \
    asm volatile( \
        "{\n.reg .pred p;\nsetp.ne.b32 p, %13, 0;\n" \
        "wgmma.mma_async.sync.aligned.m64n16k16.f32." T "." T " {%0,%1,%2,%3,%4,%5,%6,%7}, {%8,%9,%10,%11}, %12, p, 1, 1, 0;\n}\n" \
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]) \
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(b), "r"(acc))
template <int N, bool kBf16 = false> struct MmaRS;
template <bool kBf16> struct MmaRS<16, kBf16> {
  static __device__ __forceinline__ void run(float (&d)[8], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                             uint64_t b, int acc) {
    if constexpr (kBf16) MLAKV_MMA_RS16("bf16");
    else MLAKV_MMA_RS16("f16");
  }
};
#undef MLAKV_MMA_RS16
template <> struct MmaRS<32> {
  static __device__ __forceinline__ void run(float (&d)[16], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                             uint64_t b, int acc) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k16.f32.f16.f16 "
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, {%16,%17,%18,%19}, %20, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(b), "r"(acc));
  }
};
// The register-operand form's K reads a block ahead of their conversion (0: each block's reads
// where it converts; for A/B builds).
#ifndef MLAKV_DECODE_K_PREFETCH
#define MLAKV_DECODE_K_PREFETCH 1
#endif
inline constexpr bool kKPrefetch = MLAKV_DECODE_K_PREFETCH != 0;
// And Vᵀ's reads half a k-step ahead (0: where each even half converts).
#ifndef MLAKV_DECODE_V_PREFETCH
#define MLAKV_DECODE_V_PREFETCH 1
#endif
inline constexpr bool kVPrefetch = MLAKV_DECODE_V_PREFETCH != 0;
/// The two e4m3 pairs of a word (bytes 0–1, bytes 2–3) as fp16 pairs, exactly (NaN codes stay NaN).
__device__ __forceinline__ void e4m3x4_to_f16x2x2(uint32_t w, uint32_t& lo, uint32_t& hi) {
  asm("{\n.reg .b16 l, h;\nmov.b32 {l, h}, %2;\ncvt.rn.f16x2.e4m3x2 %0, l;\ncvt.rn.f16x2.e4m3x2 %1, h;\n}\n"
      : "=r"(lo), "=r"(hi)
      : "r"(w));
}

/// Rows-as-M form: D[64 × 64] (+)= A · B with A and B from shared memory, both K-major; bf16
/// operands, or fp16 (kF16: fp8_ds_mla's latent columns in the CTA pairs).
#define MLAKV_MMA_SS64(T) \
    asm volatile(\
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n" \
        "wgmma.mma_async.sync.aligned.m64n64k16.f32." T "." T " " \
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, %32, %33, p, 1, 1, 0, 0;\n}\n" \
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]) \
        : "l"(a), "l"(b), "r"(acc))
template <bool kF16 = false> struct MmaSS64 {
  static __device__ __forceinline__ void run(float (&d)[32], uint64_t a, uint64_t b, int acc) {
    if constexpr (kF16) MLAKV_MMA_SS64("f16");
    else MLAKV_MMA_SS64("bf16");
  }
};
#undef MLAKV_MMA_SS64
/// Rows-as-M form, n = 256: D[64 × 256] += A · B, A (pairs of bf16, or kF16 fp16) from registers
/// in the accumulator's fragment order, B MN-major from shared memory (V: dims contiguous, 64-column
/// blocks `lbo` apart). One m64n256k16 measured faster than four m64n64k16 (docs/perf).
#define MLAKV_MMA_RS256(T) \
    asm volatile(\
        "wgmma.mma_async.sync.aligned.m64n256k16.f32." T "." T " " \
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63,%64,%65,%66,%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%77,%78,%79,%80,%81,%82,%83,%84,%85,%86,%87,%88,%89,%90,%91,%92,%93,%94,%95,%96,%97,%98,%99,%100,%101,%102,%103,%104,%105,%106,%107,%108,%109,%110,%111,%112,%113,%114,%115,%116,%117,%118,%119,%120,%121,%122,%123,%124,%125,%126,%127}, {%128, %129, %130, %131}, %132, 1, 1, 1, 1;\n" \
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127]) \
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b))
template <bool kF16 = false> struct MmaRS256 {
  static __device__ __forceinline__ void run(float (&d)[128], const uint32_t (&a)[4], uint64_t b) {
    if constexpr (kF16) MLAKV_MMA_RS256("f16");
    else MLAKV_MMA_RS256("bf16");
  }
};
#undef MLAKV_MMA_RS256
/// Lock-step form: D[64 × 256] += A · B with A from shared memory (the other warpgroup's P,
/// K-major) and B MN-major from shared memory (V), bf16.
struct MmaSS256 {
  static __device__ __forceinline__ void run(float (&d)[128], uint64_t a, uint64_t b) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 "
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63,%64,%65,%66,%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%77,%78,%79,%80,%81,%82,%83,%84,%85,%86,%87,%88,%89,%90,%91,%92,%93,%94,%95,%96,%97,%98,%99,%100,%101,%102,%103,%104,%105,%106,%107,%108,%109,%110,%111,%112,%113,%114,%115,%116,%117,%118,%119,%120,%121,%122,%123,%124,%125,%126,%127}, %128, %129, 1, 1, 1, 0, 1;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
        : "l"(a), "l"(b));
  }
};
/// Lock-step form: D[64 × 64] (+)= A · B with A from registers (Q's rope columns in P's fragment
/// order) and B K-major from shared memory (the tile's rope block), bf16.
struct MmaRS64 {
  static __device__ __forceinline__ void run(float (&d)[32], const uint32_t (&a)[4], uint64_t b, int acc) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, {%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(acc));
  }
};
}  // namespace sm90
#endif  // MLAKV_SM90A_DEVICE

/// The sm90 kernel's schedule tables: the schedule grid's (global memory), or on the fused path
/// the CTA's own, computed into shared memory at `si` (FusedTab's layout).
struct Sm90Tab {
  static constexpr int kPrefix = FusedTab::kPrefix, kNtiles = FusedTab::kNtiles, kLen = FusedTab::kLen,
                       kSplitBase = FusedTab::kSplitBase, kNsplit = FusedTab::kNsplit;
  const DecodeArgs& a;
  const int* si;
  __device__ __forceinline__ int header(int i) const { return a.fused ? si[i] : __ldg(a.sched.header + i); }
  __device__ __forceinline__ int prefix(int i) const { return a.fused ? si[kPrefix + i] : __ldg(a.sched.prefix + i); }
  __device__ __forceinline__ int ntiles(int i) const { return a.fused ? si[kNtiles + i] : __ldg(a.sched.ntiles + i); }
  __device__ __forceinline__ int len_local(int i) const { return a.fused ? si[kLen + i] : __ldg(a.sched.len_local + i); }
  __device__ __forceinline__ int split_base(int i) const {
    return a.fused ? si[kSplitBase + i] : __ldg(a.sched.split_base + i);
  }
  __device__ __forceinline__ int nsplit(int i) const { return a.fused ? si[kNsplit + i] : __ldg(a.sched.nsplit + i); }
};

#if MLAKV_SM90A_DEVICE
namespace sm90 {

/// One output element, bf16 or f32.
__device__ __forceinline__ void store_out(const DecodeArgs& a, int64_t at, float y) {
  if (a.out_f32) static_cast<float*>(a.out)[at] = y;
  else static_cast<__nv_bfloat16*>(a.out)[at] = __float2bfloat16_rn(y);
}

/// The start every sm90 form shares: the schedule (fused path: computed into `si` by warp 0, and
/// empty requests' rows written here; else the schedule grid's, waited for), the dependents'
/// launch, and this part's cost range [lo, hi) with its first request. False where the part has
/// no work (uniform over the CTA, which then returns).
/// `scratch`: kFusedMaxBatch ints of shared memory nothing reads before the CTA's barriers are
/// initialized (the first stage's), where the fused path's schedule warp writes the combine's list.
template <int kThreadsCta, int kRowsCta>
__device__ __forceinline__ bool part_range(const DecodeArgs& a, int* si, int* scratch, int& lo, int& hi, int& first_b) {
  const Sm90Tab sch{a, si};
  const int B = a.batch;
  const int part = blockIdx.x, row0 = blockIdx.y * kRowsCta;
  if (threadIdx.x == 0) {
    MLAKV_TRACE_WIDE(0, kTrStart);
    MLAKV_TRACE_WIDE(0, kTrClockAtStart);
    MLAKV_TRACE_WIDE(0, kTrSm);
  }
  if (a.fused) {
    // No schedule grid: warp 0 computes the schedule into shared memory (the same one the
    // schedule kernel would write), and CTA (b mod parts, y) writes empty request b's rows. The
    // grid starts the step as a programmatic dependent of whatever kernel ran before it: its
    // launch and start overlap that kernel's tail, and nothing that kernel may write (inputs, the
    // workspace the previous step's combine or in-grid merge reads) is touched before the wait.
    pdl_wait();
    const Schedule w = FusedTab::at(a.sched, si, scratch);
    if (threadIdx.x < 32) schedule_warp(a, w, static_cast<int>(gridDim.x));
    __syncthreads();
    const int nr = min(kRowsCta, a.rows - row0);
    for (int b = blockIdx.x; b < B; b += gridDim.x) {
      if (sch.ntiles(b) != 0) continue;
      for (int idx = threadIdx.x; idx < nr * 512; idx += kThreadsCta) {
        const int gr = row0 + (idx >> 9), c = idx & 511, qi = gr / a.heads, h = gr - qi * a.heads;
        store_out(a, b * a.o_s0 + qi * a.o_s1 + h * a.o_s2 + c, 0.0f);
        if (c == 0) a.lse[b * a.l_s0 + qi * a.l_s1 + h * a.l_s2] = -INFINITY;
      }
    }
  } else {
    pdl_wait();  // the schedule is written by the grid before this one
  }
  if (threadIdx.x == 0) MLAKV_TRACE_WIDE(0, kTrScheduled);
  pdl_launch_dependents();
  const int payload = sch.header(0), total = sch.header(1);
  lo = part * payload;
  if (lo >= total) return false;  // uniform over the CTA
  hi = min(lo + payload, total);
  {
    int l = 0, h = B;  // prefix[l] <= lo < prefix[h]
    while (h - l > 1) {
      const int m = (l + h) >> 1;
      if (sch.prefix(m) <= lo) l = m;
      else h = m;
    }
    first_b = l;
  }
  return true;
}

/// Cache block of local token j of request b, and the token's row there in in_block; −1 where
/// the token is masked (past the request's end, or a block id outside the table or the cache).
__device__ __forceinline__ int token_block(const DecodeArgs& a, const Sm90Tab& sch, int b, int j, int& in_block) {
  if (j >= sch.len_local(b)) return -1;
  int64_t jb;
  dev::split_slot(j, a.block_size, true, jb, in_block);
  if (jb >= a.max_blocks) return -1;
  const int blk = __ldg(a.block_table + b * a.bt_s0 + jb * a.bt_s1);
  return blk < 0 || blk >= a.num_blocks ? -1 : blk;
}

/// This thread's word of an m64k64 A fragment (k-step c, register r: row 16w + g + 8(r & 1),
/// columns 16c + 8(r >> 1) + 2qd and + 1) in a K-major 128-byte-swizzled [64 rows][64] bf16
/// tile: the rows-as-M P buffers, and the lock-step form's Q rope block.
__device__ __forceinline__ uint32_t* frag_word(uint8_t* tile, int c, int r, int w, int g, int qd) {
  const int row = 16 * w + g + 8 * (r & 1), j = 2 * c + (r >> 1);
  return reinterpret_cast<uint32_t*>(tile + (row >> 3) * 1024 + (row & 7) * 128 + ((j ^ (row & 7)) << 4) + qd * 4);
}

/// Causal limit of CTA row gr's query (positions below it are visible), INT_MIN for a padding
/// row past the last; L is the request's length.
__device__ __forceinline__ int row_limit(const DecodeArgs& a, int gr, int L) {
  const int qi = gr / a.heads;
  return gr >= a.rows ? INT_MIN : a.causal ? L - a.s_q + qi + 1 : INT_MAX;
}

/// Chunk ch (16 bytes) of CTA row r in a swizzled Q tile of kRowsCta rows at q: column block
/// ch / 8 at (ch / 8) · kRowsCta · 128, rows 128 bytes apart in the 128-byte swizzle.
template <int kRowsCta> __device__ __forceinline__ uint4* q_chunk_at(uint8_t* q, int r, int ch) {
  const int c = ch >> 3, u = ch & 7;
  return reinterpret_cast<uint4*>(q + c * (kRowsCta * 128) + (r >> 3) * 1024 + (r & 7) * 128 + ((u ^ (r & 7)) << 4));
}

/// A request's Q rows into the swizzled Q tile at q, by 256 threads (ct): every chunk a thread
/// stores is loaded before named barrier `bar` (every reader past the previous request's last
/// Q·Kᵀ), then stored; a load → store loop paid one global round trip per chunk (18 at 64 rows)
/// on the path of the request's first Q·Kᵀ (ncu: 4 % of the 64-row form's samples waited there).
/// kF16: the latent columns as fp16 (fp8_ds_mla's fp16 stage), the rope bf16 times 2^-kF16Shift
/// (exact), so that the softmax scale's 2^kF16Shift restores both parts alike. Ends with the
/// tile visible to wgmma, behind the same barrier.
template <int kRowsCta, bool kF16>
__device__ __forceinline__ void load_q_rows(const DecodeArgs& a, int b, int row0, uint8_t* q, int ct, int bar) {
  constexpr int kChunks = kRowsCta * 72, kPer = (kChunks + 255) / 256;
  uint4 v[kPer];
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int idx = ct + 256 * i, r = idx / 72, ch = idx - r * 72;
    if (kChunks % 256 == 0 || idx < kChunks) v[i] = load_q_chunk(a, b, row0 + r, ch);
  }
  named_sync(bar, 256);
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int idx = ct + 256 * i, r = idx / 72, ch = idx - r * 72;
    if (kF16 && ch < 64)
      v[i] = make_uint4(bf16x2_to_f16x2(v[i].x), bf16x2_to_f16x2(v[i].y), bf16x2_to_f16x2(v[i].z), bf16x2_to_f16x2(v[i].w));
    else if (kF16) {
      constexpr float kDown = 1.0f / (1 << kF16Shift);
      v[i] = make_uint4(scale_bf16x2(v[i].x, kDown), scale_bf16x2(v[i].y, kDown), scale_bf16x2(v[i].z, kDown),
                        scale_bf16x2(v[i].w, kDown));
    }
    if (kChunks % 256 == 0 || idx < kChunks) *q_chunk_at<kRowsCta>(q, r, ch) = v[i];
  }
  fence_async_smem();
  named_sync(bar, 256);
}

/// The register-operand fp8 form's Q tile (kRowsCta = 16 or 32 rows): each row in fp16 times 2^σ,
/// the power of two that puts its largest finite |value| in [2^14, 2^15) (fp16 then keeps bf16's 8
/// significant bits of every value down to 2^-28 of that one; σ within ±126), 2^-σ in qf[row] for
/// the softmax scale; within each 64-column block, column L = 16j + 8h + 2q + e holds Q's column
/// 16q + 4j + 2h + e, the order in which consumer thread q finds K's bytes in its 16-byte reads
/// (word j of k-step 4·block + j: bytes 0–1 for columns 2q, 2q + 1, bytes 2–3 for 2q + 8, 2q + 9).
/// kBf16Rope (fp8_ds_mla, whose rope is bf16): the rope block stays bf16, times the same 2^σ.
/// By 256 threads: warp v loads rows RPW·v .. RPW·v + RPW − 1 (one shuffle reduction per row);
/// named barrier `bar` as load_q_rows.
template <int kRowsCta, bool kBf16Rope = false>
__device__ __forceinline__ void load_q_rows_f16(const DecodeArgs& a, int b, int row0, uint8_t* q, float* qf, int ct,
                                                int bar) {
  constexpr int RPW = kRowsCta / 8;
  const int v = ct >> 5, lane = ct & 31;
  uint4 c[RPW][3];
  float f[RPW];
#pragma unroll
  for (int rr = 0; rr < RPW; ++rr) {
    float mx = 0.0f;
#pragma unroll
    for (int i = 0; i < 3; ++i) {
      const int ch = lane + 32 * i;
      c[rr][i] = ch < 72 ? load_q_chunk(a, b, row0 + RPW * v + rr, ch) : make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int x = 0; x < 4; ++x) {
        const uint32_t wd = (&c[rr][i].x)[x];
        const float lo = fabsf(__uint_as_float(wd << 16)), hi = fabsf(__uint_as_float(wd & 0xffff0000u));
        mx = fmaxf(mx, fmaxf(lo <= FLT_MAX ? lo : 0.0f, hi <= FLT_MAX ? hi : 0.0f));  // inf and NaN: not finite
      }
    }
    mx = dev::warp_max(mx);
    const int sg = mx > 0.0f ? min(max(14 - ilogbf(mx), -126), 126) : 0;
    f[rr] = __int_as_float((127 + sg) << 23);
    if (lane == 0) qf[RPW * v + rr] = __int_as_float((127 - sg) << 23);
  }
  named_sync(bar, 256);
#pragma unroll
  for (int rr = 0; rr < RPW; ++rr)
#pragma unroll
    for (int i = 0; i < 3; ++i) {
      const int ch = lane + 32 * i;
      if (ch >= 72) continue;
      // Chunk ch holds columns 8·c8 .. 8·c8 + 7 of block ch / 8: word x is (q, j, h) =
      // (c8 / 2, 2·(c8 % 2) + x / 2, x % 2), logical chunk 2j + h, word q there.
      const int c8 = ch & 7, blk = ch & ~7;
#pragma unroll
      for (int x = 0; x < 4; ++x) {
        const uint32_t wd = (&c[rr][i].x)[x];
        const uint32_t h2 = kBf16Rope && blk == 64 ? scale_bf16x2(wd, f[rr])
                                                   : pack_f16(__uint_as_float(wd << 16) * f[rr], __uint_as_float(wd & 0xffff0000u) * f[rr]);
        const int lc = blk + 2 * (2 * (c8 & 1) + (x >> 1)) + (x & 1);
        reinterpret_cast<uint32_t*>(q_chunk_at<kRowsCta>(q, RPW * v + rr, lc))[c8 >> 1] = h2;
      }
    }
  fence_async_smem();
  named_sync(bar, 256);
}

/// Rows-as-M tile softmax in place on an m64n64 accumulator s (row 16·warp + g + 8i, token
/// 8j + 2qd + e at [4j + 2i + e]): the scores times sc where the token is visible to the row (its
/// flag in ok[64] set, before len, within lim), −inf elsewhere; m_new = max(m_in, the tile's row
/// maxima); s ← 2^(s − m_new); sum: this thread's share of each row's sum.
__device__ __forceinline__ void rm_tile_softmax(const DecodeArgs& a, float (&s)[32], const uint8_t* ok, int len, int jt0,
                                                const int (&lim)[2], float sc, const float (&m_in)[2],
                                                float (&m_new)[2], float (&sum)[2], int qd) {
  // Nearly every tile is whole and visible to both of this thread's rows: then one look
  // at the tile's 64 valid flags (four 16-byte loads) and its last position replaces the
  // per-token tests (a sixth of the consumers' instructions in the profile).
  bool whole = jt0 + kTile <= len;
  if (whole) {
    const uint4* f = reinterpret_cast<const uint4*>(ok);
    uint32_t all = 0x01010101u;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const uint4 v = f[q];
      all &= v.x & v.y & v.z & v.w;
    }
    const int64_t last = global_pos(jt0 + kTile - 1, a);
    whole = all == 0x01010101u && last < lim[0] && last < lim[1];
  }
  if (whole) {
#pragma unroll
    for (int r = 0; r < 32; ++r) s[r] *= sc;
  } else {
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int tok = 8 * j + 2 * qd + e, jt = jt0 + tok;
        const bool vis = ok[tok] != 0 && jt < len;
        const int64_t pos = global_pos(jt, a);
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          float& x = s[4 * j + 2 * i + e];
          x = vis && pos < lim[i] ? x * sc : -INFINITY;
        }
      }
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    float mx = -INFINITY;
#pragma unroll
    for (int j = 0; j < 8; ++j) mx = fmaxf(mx, fmaxf(s[4 * j + 2 * i], s[4 * j + 2 * i + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    m_new[i] = fmaxf(m_in[i], mx);
    const float mu = m_new[i] == -INFINITY ? 0.0f : m_new[i];  // nothing visible yet: keep exp2 finite
    float sm = 0.0f;
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        float& x = s[4 * j + 2 * i + e];
        x = fast_exp2(x - mu);
        sm += x;
      }
    sum[i] = sm;  // this thread's columns; the quad's sum at the segment's end
  }
}

/// Rows-as-M: row i (0: g, 1: g + 8 of this warp's 16) of a warpgroup's 256 output columns
/// (o[cb]: column block cb, an m64n64 accumulator's fragment) times alpha, skipped exactly where
/// the warp's alpha is 1 (once a row's maximum settles, on most tiles).
__device__ __forceinline__ void rm_rescale(float (&o)[4][32], int i, float alpha) {
  if (__any_sync(0xffffffffu, alpha != 1.0f)) {
#pragma unroll
    for (int cb = 0; cb < 4; ++cb)
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        o[cb][4 * j + 2 * i] *= alpha;
        o[cb][4 * j + 2 * i + 1] *= alpha;
      }
  }
}

/// Rows-as-M, a segment's end: warpgroup cw's 256 output columns (o[cb]: column block cb, an
/// m64n64 accumulator's fragment) of the CTA's rows, normalized by both warpgroups' row sums (this
/// thread's shares l_run, exchanged through row_l[2][64] and named barrier `bar` of both
/// warpgroups, over the same maxima), into partial slot `slot` (≥ 0) or the output; the LSE from
/// ref (the rows' maxima, log2 units).
__device__ __forceinline__ void rm_write_rows(const DecodeArgs& a, const float (&o)[4][32], const float (&l_run)[2],
                                              float* row_l, int bar, const float (&ref)[2], int b, int slot, int row0,
                                              int cw, int w, int g, int qd, float out_scale) {
  float lq[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    float l = l_run[i];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    lq[i] = l;
    if (qd == 0) row_l[cw * 64 + 16 * w + g + 8 * i] = l;
  }
  named_sync(bar, 256);
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const float l = lq[i] + row_l[(cw ^ 1) * 64 + 16 * w + g + 8 * i];
    const int gr = row0 + 16 * w + g + 8 * i;
    if (gr >= a.rows) continue;
    const float inv = row_out_factor(l, out_scale);
    const float lse_v = row_lse(ref[i], l);
    const int qi = gr / a.heads, h = gr - qi * a.heads;
    const int col0 = 256 * cw + 2 * qd;
    if (slot >= 0) {
      float* dst = a.sched.part_o + (static_cast<int64_t>(slot) * a.rows + gr) * 512 + col0;
#pragma unroll
      for (int cb = 0; cb < 4; ++cb)
#pragma unroll
        for (int j = 0; j < 8; ++j)
          *reinterpret_cast<float2*>(dst + 64 * cb + 8 * j) =
              make_float2(o[cb][4 * j + 2 * i] * inv, o[cb][4 * j + 2 * i + 1] * inv);
      if (cw == 0 && qd == 0) a.sched.part_lse[static_cast<int64_t>(slot) * a.rows + gr] = lse_v;
    } else {
      const int64_t off = b * a.o_s0 + qi * a.o_s1 + h * a.o_s2 + col0;
#pragma unroll
      for (int cb = 0; cb < 4; ++cb)
#pragma unroll
        for (int j = 0; j < 8; ++j)
#pragma unroll
          for (int e = 0; e < 2; ++e) store_out(a, off + 64 * cb + 8 * j + e, o[cb][4 * j + 2 * i + e] * inv);
      if (cw == 0 && qd == 0) a.lse[b * a.l_s0 + qi * a.l_s1 + h * a.l_s2] = lse_v;
    }
  }
}

/// One output row's four columns c..c+3 (float4 `v`) of request b.
__device__ __forceinline__ void store_out4(const DecodeArgs& a, int b, int gr, int c, float4 v) {
  const int qi = gr / a.heads, h = gr - qi * a.heads;
  const int64_t off = b * a.o_s0 + qi * a.o_s1 + h * a.o_s2 + c;
  if (a.out_f32) {
    float* d = static_cast<float*>(a.out) + off;
    if (a.out_vec) *reinterpret_cast<float4*>(d) = v;
    else d[0] = v.x, d[1] = v.y, d[2] = v.z, d[3] = v.w;
    return;
  }
  __nv_bfloat16* d = static_cast<__nv_bfloat16*>(a.out) + off;
  const __nv_bfloat162 lo2 = __floats2bfloat162_rn(v.x, v.y), hi2 = __floats2bfloat162_rn(v.z, v.w);
  if (a.out_vec) {
    uint2 pk;
    pk.x = *reinterpret_cast<const uint32_t*>(&lo2);
    pk.y = *reinterpret_cast<const uint32_t*>(&hi2);
    *reinterpret_cast<uint2*>(d) = pk;
  } else {
    d[0] = lo2.x, d[1] = lo2.y, d[2] = hi2.x, d[3] = hi2.y;
  }
}

/// In-grid merge scratch at the start of shared memory (the KV stages, free once the consumers
/// are done): the arrival's index, shared by the CTA.
constexpr int kMergeFlag = 0, kMergeScratchBytes = 16;
/// (LSE, float4 of o) pairs a merging lane has in flight. Sixteen measured slower than eight
/// (session 40: bf16 B=1 H=128 32K 77.0 against 68.0 µs, B=32 H=128 1K 82.8 against 71.3) and
/// raised the fp8 rows-as-M pairs kernel's spills from 40 to 76 bytes; eight leave every default
/// form's spills as they were.
#ifndef MLAKV_DECODE_MERGE_INFLIGHT
#define MLAKV_DECODE_MERGE_INFLIGHT 8
#endif
constexpr int kMergeInFlight = MLAKV_DECODE_MERGE_INFLIGHT;

/// One lane's running merge of partials for one item (a row's four output columns): the largest
/// LSE seen, Σ exp(lse − m), Σ exp(lse − m)·o, and whether a partial's LSE was NaN (a partial that
/// saw a NaN score: the row reads NaN, as in the reference).
struct MergeAcc {
  float m = -INFINITY, s = 0.0f;
  float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
  bool nan = false;

  /// Another running merge (m2, s2, o2) folded in; neither having seen a token leaves it as it is.
  __device__ __forceinline__ void fold(float m2, float s2, float4 o2) {
    const float mx = fmaxf(m, m2);
    if (!(mx > -INFINITY)) return;
    const float c1 = __expf(m - mx), c2 = __expf(m2 - mx);
    m = mx, s = s * c1 + s2 * c2;
    o = make_float4(o.x * c1 + o2.x * c2, o.y * c1 + o2.y * c2, o.z * c1 + o2.z * c2, o.w * c1 + o2.w * c2);
  }
  __device__ __forceinline__ void add(float lse, float4 v) {
    nan |= isnan(lse);
    if (lse > -INFINITY) fold(lse, 1.0f, v);  // an empty partial adds nothing, whatever its o holds
  }
  /// With the lane `off` away (xor): every lane of the warp runs it.
  __device__ __forceinline__ void join(int off) {
    float4 o2;
    o2.x = __shfl_xor_sync(0xffffffffu, o.x, off), o2.y = __shfl_xor_sync(0xffffffffu, o.y, off);
    o2.z = __shfl_xor_sync(0xffffffffu, o.z, off), o2.w = __shfl_xor_sync(0xffffffffu, o.w, off);
    nan |= __shfl_xor_sync(0xffffffffu, static_cast<int>(nan), off) != 0;
    fold(__shfl_xor_sync(0xffffffffu, m, off), __shfl_xor_sync(0xffffffffu, s, off), o2);
  }
};

/// A merging lane's walk over its (item, partial) pairs, item-major: the item's row r and float4
/// column u, the pair's index among the item's (jj) and its LSE offset (partial j = lp + jj·P,
/// row r: j·R + r). Advanced by additions only: per-pair divisions and a branch around each load
/// cost the first one-pass merge ~1,000 instructions a round; without them the merge was 0.5–3 %
/// faster (session 41), so issue is not what holds it (18 µs at B=32 H=128 1K, 8 at B=1 H=16 64K).
struct MergeWalk {
  int item, r, u, jj, off;
  /// nu columns a row; G items a step (dr rows, du columns); J pairs an item; jstep = P·R;
  /// lane0 = lp·R.
  struct Shape {
    int nu, G, dr, du, J, jstep, lane0;
  };
  __device__ __forceinline__ void next(const Shape& s) {
    if (++jj < s.J) {
      off += s.jstep;
      return;
    }
    jj = 0, item += s.G, r += s.dr, u += s.du;
    if (u >= s.nu) u -= s.nu, ++r;
    off = s.lane0 + r;
  }
};

/// In-grid merge: merges the `ns` partials (slots first..first + ns − 1) of request b over this
/// CTA's rows into the output, columns of slice `slice` of `nslices` only (slice 0 also writes
/// the LSE). Run by the 256 consumer threads once every partial is written; partials are read
/// through L2 (ld.global.cg): other CTAs of this grid wrote them.
/// One pass, no shared memory: an item (a row's float4 of the slice) belongs to P consecutive
/// lanes of a warp, each folding every P-th partial's LSE and o as they land; the P lanes then
/// join by shuffles. A lane's (item, partial) pairs go kMergeInFlight at a time, across items;
/// a pair past the end loads slot `first`'s row 0 (always there) and counts as empty.
template <int kRowsCta>
__device__ void merge_slice(const DecodeArgs& a, int b, int first, int ns, int slice, int nslices, int row0, int ct) {
  const int nr = min(kRowsCta, a.rows - row0), R = a.rows;
  const float* pl = a.sched.part_lse + static_cast<int64_t>(first) * R + row0;
  const float4* po = reinterpret_cast<const float4*>(a.sched.part_o) + (static_cast<int64_t>(first) * R + row0) * 128;
  const int u0 = slice * 128 / nslices, nu = (slice + 1) * 128 / nslices - u0, W = nr * nu;
  int P = 1;  // lanes per item: as many as keep the 256 threads busy, a power of two ≤ 32
  while (P < 32 && W * P < 256) P *= 2;
  const int G = 256 / P, g = ct / P, lp = ct - g * P;
  const int J = (ns + P - 1) / P, n = (W + G - 1) / G * J;  // partials per lane per item; pairs per lane
  const int dr = G / nu, r0 = g / nu;
  const MergeWalk::Shape sh{nu, G, dr, G - dr * nu, J, P * R, lp * R};
  MergeWalk w{g, r0, g - r0 * nu, 0, sh.lane0 + r0};
  MergeAcc acc;
  for (int q0 = 0; q0 < n; q0 += kMergeInFlight) {  // n, J and P are the same in every lane
    float lv[kMergeInFlight];
    float4 ov[kMergeInFlight];
    MergeWalk lw = w;
#pragma unroll
    for (int k = 0; k < kMergeInFlight; ++k) {
      const bool on = q0 + k < n && lw.item < W && lp + lw.jj * P < ns;
      const int o = on ? lw.off : 0;
      lv[k] = __ldcg(pl + o);
      ov[k] = __ldcg(po + static_cast<int64_t>(o) * 128 + (on ? u0 + lw.u : 0));
      if (!on) lv[k] = -INFINITY;
      lw.next(sh);
    }
#pragma unroll
    for (int k = 0; k < kMergeInFlight; ++k) {
      if (q0 + k >= n) break;
      acc.add(lv[k], ov[k]);
      if (w.jj == J - 1) {
        for (int off = P / 2; off > 0; off >>= 1) acc.join(off);  // the item's last pair: its lanes meet
        if (lp == 0 && w.item < W) {
          const float L = acc.nan ? NAN : acc.m > -INFINITY ? acc.m + __logf(acc.s) : -INFINITY;
          const float f = acc.nan ? NAN : acc.s > 0.0f ? 1.0f / acc.s : 0.0f;
          store_out4(a, b, row0 + w.r, 4 * (u0 + w.u), make_float4(acc.o.x * f, acc.o.y * f, acc.o.z * f, acc.o.w * f));
          if (u0 + w.u == 0) {
            const int gr = row0 + w.r, qi = gr / a.heads, h = gr - qi * a.heads;
            a.lse[b * a.l_s0 + qi * a.l_s1 + h * a.l_s2] = L;
          }
        }
        acc = MergeAcc{};
      }
      w.next(sh);
    }
  }
}

/// In-grid merge: this CTA wrote one partial of request b (its rows). Arrives at the request's
/// counter (one per row tile) and returns the arrival's index (0 first): the last
/// merge_slices(ns) arrivals each merge a slice (merge_if_last). A word with another tag (an
/// earlier call's, or whatever the workspace held) counts as zero.
__device__ __forceinline__ int merge_arrive(const DecodeArgs& a, unsigned long long* c, int ct, uint8_t* smem) {
  int* flag = reinterpret_cast<int*>(smem + kMergeFlag);
  if (ct == 0) MLAKV_TRACE_STEP(kTsMergeStored, true);
  __threadfence();  // this thread's partial stores, before the arrival
  named_sync(6, 256);
  if (ct == 0) {
    // A compare-and-swap only while the word holds another tag (the first arrival claims it);
    // then plain adds: CTAs ending together would retry a swap once per round trip each
    // (session 38: +37 µs at B=1 H=16 64K).
    const unsigned long long tag = static_cast<unsigned long long>(a.merge_tag) << 32;
    unsigned long long v = *reinterpret_cast<volatile unsigned long long*>(c);
    int idx = -1;
    while ((v >> 32) != a.merge_tag) {
      const unsigned long long got = atomicCAS(c, v, tag | 1ull);
      if (got == v) {
        idx = 0;
        break;
      }
      v = got;
    }
    *flag = idx >= 0 ? idx : static_cast<int>(atomicAdd(c, 1ull) & 0xffffffffu);
    MLAKV_TRACE_STEP(kTsMergeArrived, true);
  }
  named_sync(6, 256);
  const int idx = *flag;
  named_sync(6, 256);  // the flag is read before the scratch is reused
  return idx;
}

/// In-grid merge, after every arrival of this CTA (so that no CTA waits on one that waits): if
/// arrival `idx` is among the last merge_slices(ns), waits for all ns, merges its slice, then
/// counts itself past them (the last to do so resets the word: the next call, or a graph's next
/// replay, finds it clean). Nothing but the wait lies between the last arrival and the loads:
/// the last arrival does not poll (it saw the count), and the count past comes after the merge.
template <int kRowsCta>
__device__ __forceinline__ void merge_if_last(const DecodeArgs& a, unsigned long long* c, int b, int first, int ns,
                                              int idx, int row0, int ct) {
  const int z = merge_slices(ns);
  if (idx < ns - z) return;
  if (ct == 0) {
    if (idx != ns - 1)
      for (;;) {
        unsigned long long v;
        asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(c) : "memory");
        if (static_cast<int>(v & 0xffffffffu) >= ns) break;  // the tag is ours since our arrival
        __nanosleep(64);
      }
    else
      __threadfence();  // the arrival's add was relaxed: acquire the others' partials
  }
  if (ct == 0) MLAKV_TRACE_STEP(kTsMergeWoke, true);
  named_sync(6, 256);  // thread 0's acquire, before every thread's loads (as CUTLASS's barrier waits)
  merge_slice<kRowsCta>(a, b, first, ns, ns - 1 - idx, z, row0, ct);
  if (ct == 0) MLAKV_TRACE_STEP(kTsMergeDone, true);  // its own stores issued, not yet landed
  if (ct == 0 && static_cast<int>(atomicAdd(c, 1ull) & 0xffffffffu) == ns + z - 1) atomicExch(c, 0ull);
}

/// In-grid merge after a part's loop: `rec` (PartSlots) names the one or two split requests
/// this CTA wrote partials of. Inline: out of line (a call from each kernel) measured 1.6 %
/// slower on bf16 B=128 H=128 4K, a path that never calls it (session 40).
template <int kRowsCta>
__device__ __forceinline__ void merge_part(const DecodeArgs& a, const int* si, int rec, int row0, int ct, uint8_t* smem) {
  const Sm90Tab sch{a, si};
  const int np = rec & 0xff, pb0 = (rec >> 8) & 0xff, pb1 = (rec >> 16) & 0xff;
  if (np > 2) __trap();
  const int ty = gridDim.y, y = blockIdx.y;
  unsigned long long* c0 = a.counters + pb0 * ty + y;
  unsigned long long* c1 = a.counters + pb1 * ty + y;
  const int i0 = merge_arrive(a, c0, ct, smem), i1 = np > 1 ? merge_arrive(a, c1, ct, smem) : 0;
  merge_if_last<kRowsCta>(a, c0, pb0, sch.split_base(pb0), sch.nsplit(pb0), i0, row0, ct);
  if (np > 1) merge_if_last<kRowsCta>(a, c1, pb1, sch.split_base(pb1), sch.nsplit(pb1), i1, row0, ct);
}

/// The partial slots a part writes (a split request's segment; −1: the request is whole here, its
/// output written directly). The fused path's in-grid merge records them (only a part's first and
/// last segment can be split) and merges after the part's loop. `part` and `payload` come from
/// the caller's registers: read here (blockIdx.x, the schedule's header), they cost the
/// rows-as-M form its uniform Q descriptor (+4 % at bf16 B=128 H=128, session 24).
/// The record is one register (it lives through the whole loop): the count in bits 0–7, then
/// the requests (< kFusedMaxBatch) in bits 8–15 and 16–23.
struct PartSlots {
  int rec = 0;
  __device__ __forceinline__ int slot(const DecodeArgs& a, const Sm90Tab& sch, int b, int part, int payload) {
    const int sb = sch.split_base(b);
    const int s = sb >= 0 ? sb + part - (sch.prefix(b) + kSegmentCost) / payload : -1;
    if (a.in_grid_merge && s >= 0) rec += 1 + (b << (8 + 8 * min(rec & 0xff, 2)));
    return s;
  }
  template <int kRowsCta>
  __device__ __forceinline__ void merge_in_grid(const DecodeArgs& a, const Sm90Tab& sch, int row0, int ct, uint8_t* smem) {
    if (a.in_grid_merge && (rec & 0xff) != 0) merge_part<kRowsCta>(a, sch.si, rec, row0, ct, smem);
  }
};

}  // namespace sm90
#endif  // MLAKV_SM90A_DEVICE

template <CacheFormat F, int NW, bool ALT = false, bool RM = false, bool RS = false>
__global__ void __launch_bounds__(kSm90Threads, 1) mla_decode_sm90_kernel(const __grid_constant__ DecodeArgs a) {
#if MLAKV_SM90A_DEVICE
  using namespace sm90;
  using S = Sm90Smem<F, NW, ALT, RS>;
  constexpr bool kWiden = S::kWiden, kTileScales = S::kTileScales;
  constexpr int NR = S::NR;  // this warpgroup's rows: its own NW, or (ALT) all 2·NW of the CTA
  constexpr int kRowsCta = 2 * NW, NJ = NR / 8, NS = NR / 2, TB = S::kTokenBytes, kRawSlots = S::kRawSlots;
  // Register split: setmaxnreg moves registers within the 384 × 168 the CTA was launched with
  // (more, and the consumers' increase waits forever). The FP8 producer widens tiles and keeps
  // several loads in flight; the bf16 one only issues copies; 32-row consumers hold a 128-float o.
  // fp8_ds_mla's pairs (kF16Stage) hold 11 loads a thread across the stage wait: 56 registers
  // spilled 200 bytes there, 72 spill 112 and ran 12 % faster (docs/PERF.md, session 18).
  // RS: the producer only copies, the consumers hold two k-steps of converted A registers.
  constexpr int kProducerRegs = S::kF16Stage ? 72 : kWiden && !RS ? (NR >= 32 ? 56 : 96) : 40;
  constexpr int kConsumerRegs = S::kF16Stage ? 216 : kWiden && !RS ? (NR >= 32 ? 224 : 200) : 232;
  static_assert(128 * kProducerRegs + 256 * kConsumerRegs <= kSm90Threads * 168, "register split");
  extern __shared__ __align__(1024) uint8_t smem[];
  const uint32_t base = smem_u32(smem);
  if (base & 1023) __trap();  // the swizzle is on address bits: tiles must sit on 1024-byte lines
  const uint32_t q_u = base + S::kQ, p_u = base + S::kP, bar_u = base + S::kBar;
  float* red = reinterpret_cast<float*>(smem + S::kRed);
  uint8_t* tok_ok = smem + S::kOk;
  float* scl = reinterpret_cast<float*>(smem + S::kScl);
  auto full_bar = [&](int st) { return bar_u + 8 * st; };
  auto empty_bar = [&](int st) { return bar_u + (RS ? 64 : 16) + 8 * st; };
  auto raw_full_bar = [&](int slot) { return bar_u + 64 + 8 * slot; };
  auto raw_free_bar = [&](int slot) { return bar_u + 96 + 8 * slot; };

  auto store_out = [&](int64_t at, float y) { sm90::store_out(a, at, y); };
  int* const si = reinterpret_cast<int*>(smem + S::kSch);
  const Sm90Tab sch{a, si};
  const int B = a.batch;
  const int part = blockIdx.x, row0 = blockIdx.y * kRowsCta;
  int lo, hi, first_b;
  if (!part_range<kSm90Threads, kRowsCta>(a, si, reinterpret_cast<int*>(smem), lo, hi, first_b)) return;

  // Rows as M in a cluster (a.cluster CTAs along y, the row tiles of one part: the same tiles):
  // each CTA multicasts part of every tile into all of them, so a stage is refilled only once
  // every CTA's consumers released it, and no CTA leaves while another may still arrive at its
  // barriers or read its stages (cluster_sync at both ends).
  const int ncl = RM ? (kWiden ? 2 : a.cluster) : 1;  // FP8 at 64 rows: always a pair
  const uint32_t crank = ncl > 1 ? cluster_ctarank() : 0;
  if (ncl > 1 && cluster_nctarank() != 2) __trap();  // the pair's masks and peer are for two CTAs
  if (threadIdx.x == 0) {
    for (int st = 0; st < S::kStages; ++st) {
      // bf16 and RS: 128 producer threads × (cp.async arrival + flag arrival); FP8: one arrival
      // each after widening.
      mbar_init(full_bar(st), kWiden && !RS ? 128 : 256);
      // One arrival per consumer warp that reads the stage, in every CTA of the cluster.
      mbar_init(empty_bar(st), (ALT ? 4 : 8) * ncl);
    }
    if constexpr (S::kOwnerWidens)
      for (int sl = 0; sl < kRawSlots; ++sl) {
        mbar_init(raw_full_bar(sl), 256);  // per producer thread: its cp.async landed + its flags written
        mbar_init(raw_free_bar(sl), 4);    // per warp that widened the unit
      }
    // Rows as M: each consumer warpgroup's "published" barrier (P and row maxima of its tile).
    if constexpr (RM)
      for (int cw = 0; cw < 2; ++cw) mbar_init(bar_u + 32 + 8 * cw, 128);
    if (ncl > 1) fence_mbarrier_init_cluster();
  }
  __syncthreads();
  if (ncl > 1) cluster_sync();  // no CTA's copies or arrivals reach a barrier before its init

  // FP8 raw units (S::kUnitTokens tokens) and their widening into a bf16 stage, by 128 threads:
  // the producer warpgroup, or (kOwnerWidens) the warpgroup that owns the tile for its second half.
  constexpr int kU = S::kUnitTokens, kTpt = 128 / kU, kParts = kTile / kU;
  constexpr int kUnits = (kTileScales ? 32 : 36) / kTpt;  // e4m3 units per thread (fp8_ds_mla: 512 dims)
  static_assert(kUnits * kTpt == (kTileScales ? 32 : 36), "units per token");
  const uint8_t* const raw = smem + S::kRaw;
  uint8_t* const raw_ok = smem + S::kRawOk;
  // kTpt = 8: lanes 4k..4k+3 take units 0..3 of token k % 4 and lanes 16..31 units 4..7, so
  // each quarter warp (one shared-memory wavefront of 16-byte accesses) holds two adjacent
  // tokens at the same four units: their widened chunks differ in parity (the swizzle's row
  // term), their raw chunks by the pitch.
  auto unit_tok = [](int t) { return kTpt == 4 ? t / 4 : 4 * (t >> 5) + (((t & 31) >> 2) & 3); };
  auto unit_q = [](int t) { return kTpt == 4 ? t % 4 : (t & 3) + 4 * ((t & 31) >> 4); };
  // Token `tok` of raw slot `slot` into row `row` of stage `st`, this thread's units q + kTpt·j.
  auto widen_unit = [&](int slot, int st, int row, int tok, int q) {
    const uint8_t* rs = raw + slot * S::kRawSlotBytes + tok * S::kRawPitch;
    uint8_t* drow = smem + st * kStageBytes + row * 128;
    // Unit u = q + kTpt·j holds columns 16u .. 16u + 15: column block u / 4, 16-byte chunks
    // 2·(q % 4) and 2·(q % 4) + 1 of the 128-byte swizzle, so both destinations are
    // per-thread constants plus j · kTpt / 4 · 8192 (no index arithmetic per unit).
    const int q4 = q & 3, d0 = ((2 * q4) ^ (row & 7)) << 4, d1 = ((2 * q4 + 1) ^ (row & 7)) << 4;
    uint8_t* dcol = drow + (q >> 2) * 8192;
    uint4 v[kUnits];
#pragma unroll
    for (int j = 0; j < kUnits; ++j) v[j] = *reinterpret_cast<const uint4*>(rs + (q + kTpt * j) * 16);
#pragma unroll
    for (int j = 0; j < kUnits; ++j) {
      const uint2 a0 = e4m3x4_to_bf16x4(v[j].x), a1 = e4m3x4_to_bf16x4(v[j].y);
      const uint2 a2 = e4m3x4_to_bf16x4(v[j].z), a3 = e4m3x4_to_bf16x4(v[j].w);
      *reinterpret_cast<uint4*>(dcol + j * (kTpt / 4) * 8192 + d0) = make_uint4(a0.x, a0.y, a1.x, a1.y);
      *reinterpret_cast<uint4*>(dcol + j * (kTpt / 4) * 8192 + d1) = make_uint4(a2.x, a2.y, a3.x, a3.y);
    }
    if constexpr (kTileScales) {
      // bf16 rope (columns 512..575 = block 8), as is; the token's four tile scales.
#pragma unroll
      for (int c = q; c < 8; c += kTpt)
        *reinterpret_cast<uint4*>(drow + 8 * 8192 + ((c ^ (row & 7)) << 4)) = *reinterpret_cast<const uint4*>(rs + 528 + 16 * c);
      if (q < 4) scl[(st * kTile + row) * 4 + q] = *reinterpret_cast<const float*>(rs + 512 + q * 4);
    }
    if (q == 0) tok_ok[st * kTile + row] = raw_ok[slot * kU + tok];
  };

  // Broadcast from lane 0: the compiler then knows it warp-uniform, and what derives from it (the
  // warpgroup's P buffer in every P·V descriptor) stays in uniform registers instead of two R2UR
  // a wgmma. Not in bf16's rows-as-M form: there it measured +2 to +4.7 % at B=128 H=128 4K and
  // 8K (H100, session 36; B=1 H=128 32K −2.3 %).
  constexpr bool kBroadcastWg = !(RM && !kWiden);
  const int wg = kBroadcastWg ? __shfl_sync(0xffffffffu, static_cast<int>(threadIdx.x >> 7), 0) : static_cast<int>(threadIdx.x >> 7);
  if (wg == 0) {
    // ---------------------------------------------------------------- producer
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kProducerRegs));
    if (threadIdx.x == 0) MLAKV_TRACE_WIDE(0, kTrRoleReady);
    const int pt = threadIdx.x;
    // Block of token `tok` of tile `c.t` of request `c.b` (−1 when masked) and its row there.
    auto token_block = [&](const Cursor& c, int tok, int& in_block) -> int {
      return sm90::token_block(a, sch, c.b, c.t * kTile + tok, in_block);
    };
    // Address of token `tok` of tile `c.t` of request `c.b` (nullptr when masked).
    auto token_src = [&](const Cursor& c, int tok) -> const uint8_t* {
      int in_block = 0;
      const int blk = token_block(c, tok, in_block);
      return blk < 0 ? nullptr : a.cache + blk * a.block_stride + static_cast<int64_t>(in_block) * TB;
    };
    if constexpr (RS) {
      // Raw e4m3 tiles into a ring of S::kStages, nothing widened: thread pt copies the 16-byte
      // chunks sub + 8j of tokens (pt >> 3) + 16p, chunk c of token t at c ^ (t & 3) (the
      // consumers' reads: a quarter warp's eight 16-byte loads then cover all 32 banks, at the
      // same column of eight tokens and at eight columns of two).
      // Block sizes that are multiples of the tile hold a tile in one block (one block-table read
      // a thread instead of four), a token's chunks go out from one base address (a masked
      // token's from the cache's start, reading nothing: source size 0), and the lookups go out a
      // tile ahead (the request's length, then its block id: two dependent global reads off the
      // producer's path; H100, session 35: fp8 H=32 −3.7 %). Before issuing tile k the producer
      // waits for tile k − in_flight to have landed: filling every free stage at once, its CTAs
      // asked for more than the HBM gives all of them and ended unevenly (session 36's stamps;
      // H=16 2.5–5 % slower than looking each token up just before its copies). With one tile in
      // flight, H100 session 37: fp8 and fp8_ds_mla H=16 −0.4 to −2.4 %, H=32 −0.5 %, B=8 1K +1.8 %
      // (a.rs_inflight, 1 unless set; fewer than the ring's stages, so that the parity waited
      // for is that tile's).
      static_assert(S::kStages >= 4, "MLAKV_DECODE_RS_INFLIGHT takes up to 3 tiles in flight");
      const int in_flight = min(max(a.rs_inflight, 1), S::kStages - 1);
      const int sub = pt & 7, tq = pt >> 3;
      const bool tile_in_block = a.block_size % kTile == 0;
      struct Ahead {
        int j0 = 0, len = 0, id = -1, in0 = 0;  // the tile's first token, the request's length, its block id as read
      };
      // A zero the compiler cannot prove warp-uniform (the producer's threads are 0..127): the
      // reads it indexes then stay in ordinary registers until the next tile uses them, where a
      // uniform value is moved into a uniform register (R2UR) at once, waiting for the read there.
      const int opaque0 = pt >> 7;
      auto look_ahead = [&](const Cursor& c) {
        Ahead h;
        if (tile_in_block && c.b < B) {
          h.j0 = c.t * kTile;
          int64_t jb;
          dev::split_slot(h.j0, a.block_size, true, jb, h.in0);
          h.len = sch.len_local(c.b + opaque0);
          if (jb < a.max_blocks) h.id = __ldg(a.block_table + (c.b + opaque0) * a.bt_s0 + jb * a.bt_s1);
        }
        return h;
      };
      Cursor ld;
      seek(ld, first_b, lo, hi, sch, B);
      Ahead cur = look_ahead(ld);
      for (int k = 0; ld.b < B; ++k) {
        const int st = k % S::kStages;
        MLAKV_TRACE(0, k, 2);
        Cursor nx = ld;
        advance(nx, lo, hi, sch, B);
        const Ahead next = look_ahead(nx);
        const uint8_t* src[4];  // this thread's tokens (nullptr: masked)
        if (tile_in_block) {
          const bool in_cache = cur.id >= 0 && cur.id < a.num_blocks;
          const uint8_t* const row0 = in_cache ? a.cache + cur.id * a.block_stride + static_cast<int64_t>(cur.in0) * TB : a.cache;
#pragma unroll
          for (int p = 0; p < 4; ++p) {
            const int tok = tq + 16 * p;
            src[p] = in_cache && tok < cur.len - cur.j0 ? row0 + tok * TB : nullptr;
          }
        } else {
#pragma unroll
          for (int p = 0; p < 4; ++p) src[p] = token_src(ld, tq + 16 * p);
        }
        mbar_wait(empty_bar(st), ((k / S::kStages) & 1) ^ 1);
        // Tile k − in_flight landed: its stage's full barrier completed that phase (the next one
        // starts only with this producer's arrivals for tile k − in_flight + kStages > k).
        if (const int kp = k - in_flight; kp >= 0) mbar_wait(full_bar(kp % S::kStages), (kp / S::kStages) & 1);
        MLAKV_TRACE(0, k, 0);
        const uint32_t stage_u = base + st * S::kStBytes;
#pragma unroll
        for (int p = 0; p < 4; ++p) {
          const int tok = tq + 16 * p;
          const bool ok = src[p] != nullptr;
          const uint8_t* const s = ok ? src[p] + 16 * sub : a.cache;  // the token's chunks from one base
          const uint32_t row_u = stage_u + tok * S::kRsPitch;
          constexpr int kChunks = TB / 16;  // 36 (fp8), 41 (fp8_ds_mla)
#pragma unroll
          for (int j = 0; j < (kChunks + 7) / 8; ++j) {
            const int c = sub + 8 * j;
            if (c < kChunks) cp_async16(row_u + ((c ^ (tok & 3)) << 4), s + 128 * j, ok ? 16 : 0);
          }
          if (sub == 0) tok_ok[st * kTile + tok] = ok;
        }
        mbar_arrive(full_bar(st));
        MLAKV_TRACE(0, k, 1);
        mbar_arrive_cp_async(full_bar(st));
        ld = nx;
        cur = next;
      }
      cp_async_wait<0>();
    } else if constexpr (!kWiden) {
      // Rows as M only: at 16 rows TMA measured 2–5 % slower than cp.async where the form is
      // memory-bound (docs/PERF.md, session 13), and at 32 rows its branch costs the consumers
      // three spilled registers.
      constexpr bool kTmaForm = RM;
      const int sub = pt & 7;
      if (kTmaForm && a.kv_tma && pt == 0) tma_prefetch_map(&a.kv_map);
      Cursor ld;
      seek(ld, first_b, lo, hi, sch, B);
      for (int k = 0; ld.b < B; ++k) {
        const int st = k & 1;
        MLAKV_TRACE(0, k, 2);
        // A tile whose tokens all lie before the request's end goes by TMA: thread 0 issues
        // boxes of 64 columns × kv_box_rows tokens (tokens 16p start them: this thread's own
        // lookups), masked blocks as boxes past the map's end, which land as zeros unread. The
        // request's last partial tile takes the cp.async path (tokens past the end must be zeros).
        const bool tma = kTmaForm && a.kv_tma && (ld.t + 1) * kTile <= sch.len_local(ld.b);
        int blk[4], in_block[4] = {};
#pragma unroll
        for (int p = 0; p < 4; ++p) blk[p] = token_block(ld, (pt >> 3) + 16 * p, in_block[p]);
        if (ncl > 1) mbar_wait<true>(empty_bar(st), ((k >> 1) & 1) ^ 1);
        else mbar_wait(empty_bar(st), ((k >> 1) & 1) ^ 1);
        MLAKV_TRACE(0, k, 0);
        const uint32_t stage_u = base + st * kStageBytes;
#pragma unroll
        for (int p = 0; p < 4; ++p) {
          const int tok = (pt >> 3) + 16 * p;
          const bool ok = blk[p] >= 0;
          if (!tma) {
            const uint8_t* src = ok ? a.cache + blk[p] * a.block_stride + static_cast<int64_t>(in_block[p]) * TB + sub * 16 : a.cache;
            const uint32_t row_u = stage_u + tok * 128 + ((sub ^ (tok & 7)) << 4);
#pragma unroll
            for (int c = 0; c < 9; ++c) cp_async16(row_u + c * 8192, ok ? src + c * 128 : a.cache, ok ? 16 : 0);
          }
          if (sub == 0) tok_ok[st * kTile + tok] = ok;
        }
        if (tma && pt == 0) {
          mbar_arrive_expect_tx(full_bar(st), kStageBytes);
          const int step_mask = (a.kv_box_rows >> 4) - 1;
          int box = k;  // in a pair, CTA (box & 1) issues each box, into both: a whole tile in turn
#pragma unroll
          for (int p = 0; p < 4; ++p) {  // unrolled: blk and in_block stay in registers
            if (p & step_mask) continue;
            const int blk_c = blk[p] >= 0 ? blk[p] : static_cast<int>(a.num_blocks);
            for (int c = 0; c < 9; c += a.kv_box_cblocks, ++box) {  // block sizes ≥ 64: the whole tile at once
              const uint32_t dst = stage_u + c * 8192 + p * 2048;
              if (ncl == 1) tma_load_4d(dst, &a.kv_map, full_bar(st), 0, in_block[p], c, blk_c);
              else if ((box & 1) == static_cast<int>(crank))
                tma_load_4d_multicast(dst, &a.kv_map, full_bar(st), 0, in_block[p], c, blk_c, 0x3);
            }
          }
        } else {
          mbar_arrive(full_bar(st));
        }
        MLAKV_TRACE(0, k, 1);
        mbar_arrive_cp_async(full_bar(st));
        advance(ld, lo, hi, sch, B);
      }
      cp_async_wait<0>();
    } else if constexpr (RM) {
      // FP8 at 64 rows: a CTA pair (DecodeArgs::cluster = 2) over a request's two row tiles. CTA
      // r widens tokens [32r, 32r + 32) of every tile into its own stage and, by st.async, into
      // the peer's (its bytes complete there on the peer's "full" barrier, which expects them),
      // so each token is read from L2 and widened once per pair, not once per 32-row CTA. No raw
      // ring fits beside the 72 KB Q tile: the next tile's raw bytes wait in registers (this
      // thread's 16-byte units q + 4j of its token) during the wait for the stage to empty.
      // fp8: 36 e4m3 units per token, exactly widened (the tensor scale stays in the softmax and
      // output scaling). fp8_ds_mla (kF16Stage): 32 e4m3 units widened to fp16 times their tile
      // scale · 2^-kF16Shift, the bf16 rope copied as is (column block 8 stays bf16, its Q·Kᵀ
      // steps bf16 wgmma, with Q's rope taking the 2^-kF16Shift), and the four scales: 11 loads a
      // thread. Every thread also looks up one token of the whole tile (its valid flag).
      constexpr bool kDs = S::kF16Stage;
      static_assert(F == CacheFormat::fp8 || kDs, "CTA pairs: fp8 and fp8_ds_mla (sm90_fp8_pairs)");
      constexpr int kJ = kDs ? 11 : 9;                 // 16-byte loads per thread
      constexpr uint32_t kPeerBytes = 32 * 9 * 128;  // what the peer's half brings: 32 tokens × 9 column blocks
      const int tok = pt >> 2, q = pt & 3, row = 32 * static_cast<int>(crank) + tok, ftok = pt >> 1;
      const uint32_t peer = crank ^ 1, row_off = row * 128;
      const uint32_t sw0 = ((2 * q) ^ (row & 7)) << 4, sw1 = ((2 * q + 1) ^ (row & 7)) << 4;
      Cursor ld;
      seek(ld, first_b, lo, hi, sch, B);
      uint4 v[kJ];
      const uint8_t* fsrc = nullptr;  // token ftok's row (nullptr: masked)
      // Byte offset of load j in the token: units q + 4j; fp8_ds_mla then the rope's chunks 2q and
      // 2q + 1 and the scales.
      auto src_off = [&](int j) { return j < 8 || !kDs ? 16 * (q + 4 * j) : j < 10 ? 528 + 16 * (2 * q + j - 8) : 512; };
      auto load = [&]() {
        const uint8_t* src = token_src(ld, row);
#pragma unroll
        for (int j = 0; j < kJ; ++j) v[j] = src ? ld_stream16(src + src_off(j)) : make_uint4(0, 0, 0, 0);
        fsrc = token_src(ld, ftok);
      };
      if (ld.b < B) load();
      for (int k = 0; ld.b < B; ++k) {
        const int st = k & 1;
        MLAKV_TRACE(0, k, 2);
        mbar_wait<true>(empty_bar(st), ((k >> 1) & 1) ^ 1);
        MLAKV_TRACE(0, k, 0);
        const uint32_t loc = base + st * kStageBytes + row_off;
        const uint32_t rem = cluster_map(loc, peer), rem_bar = cluster_map(full_bar(st), peer);
        uint8_t* const lrow = smem + st * kStageBytes + row_off;
        auto put = [&](int cb, const uint4& c0, const uint4& c1) {  // chunks 2q and 2q + 1 of column block cb
          *reinterpret_cast<uint4*>(lrow + cb * 8192 + sw0) = c0;
          *reinterpret_cast<uint4*>(lrow + cb * 8192 + sw1) = c1;
          st_async16(rem + cb * 8192 + sw0, c0, rem_bar);
          st_async16(rem + cb * 8192 + sw1, c1, rem_bar);
        };
        if constexpr (kDs) {
          const uint32_t sraw[4] = {v[10].x, v[10].y, v[10].z, v[10].w};
          uint32_t s2[4];  // each tile scale times 2^(8 − kF16Shift), as an fp16 pair
#pragma unroll
          for (int t = 0; t < 4; ++t) {
            const float x = __uint_as_float(sraw[t]) * (256.0f / (1 << kF16Shift));
            s2[t] = pack_f16(x, x);
          }
#pragma unroll
          for (int j = 0; j < 8; ++j) {  // unit q + 4j: latent dims 64j + 16q .. + 15, tile scale j / 2
            const uint2 a0 = e4m3x4_to_f16x4_scaled(v[j].x, s2[j / 2]), a1 = e4m3x4_to_f16x4_scaled(v[j].y, s2[j / 2]);
            const uint2 a2 = e4m3x4_to_f16x4_scaled(v[j].z, s2[j / 2]), a3 = e4m3x4_to_f16x4_scaled(v[j].w, s2[j / 2]);
            put(j, make_uint4(a0.x, a0.y, a1.x, a1.y), make_uint4(a2.x, a2.y, a3.x, a3.y));
          }
          put(8, v[8], v[9]);
        } else {
#pragma unroll
          for (int j = 0; j < kJ; ++j) {  // unit q + 4j: column block j, 16-byte chunks 2q and 2q + 1
            const uint2 a0 = e4m3x4_to_bf16x4(v[j].x), a1 = e4m3x4_to_bf16x4(v[j].y);
            const uint2 a2 = e4m3x4_to_bf16x4(v[j].z), a3 = e4m3x4_to_bf16x4(v[j].w);
            put(j, make_uint4(a0.x, a0.y, a1.x, a1.y), make_uint4(a2.x, a2.y, a3.x, a3.y));
          }
        }
        if ((pt & 1) == 0) tok_ok[st * kTile + ftok] = fsrc != nullptr;
        // No proxy fence here: the consumers run it after their wait (see the ring below).
        MLAKV_TRACE(0, k, 1);
        // One arrival per thread (its half-tile bytes and flags), and the peer's half as bytes.
        if (pt == 0) mbar_arrive_expect_tx(full_bar(st), kPeerBytes);
        else mbar_arrive(full_bar(st));
        advance(ld, lo, hi, sch, B);
        if (ld.b < B) load();
      }
    } else {
      // Raw units (half or quarter tiles) land in a ring of kRawSlots by cp.async, kRawSlots
      // units ahead; each is then widened (exactly: e4m3 ⊂ bf16) into the swizzled bf16 stage.
      // kTpt threads share a token; thread q of a token copies and widens its 16-byte units
      // q + kTpt·j (and fp8_ds_mla's rope chunks q + kTpt·j, scale q < 4), so that its own
      // cp.async wait covers what it reads and the four producer warps never synchronize.
      // kOwnerWidens: the producer widens only each tile's first half; the ring's barriers
      // say when a unit landed and when its slot is free again.
      const int tok = unit_tok(pt), q = unit_q(pt), lane = pt & 31;
      Cursor li;
      seek(li, first_b, lo, hi, sch, B);
      int li_part = 0, li_unit = 0;
      // trace_k ≥ 0: stamps (measurement build) once the lookup is done and once the copies are out.
      auto issue_unit = [&]([[maybe_unused]] int trace_k = -1) {
        if (li.b < B) {
          const int slot = li_unit % kRawSlots;
          if constexpr (S::kOwnerWidens)
            if (li_unit >= kRawSlots) mbar_wait(raw_free_bar(slot), ((li_unit / kRawSlots) - 1) & 1);
          const uint8_t* src = token_src(li, li_part * kU + tok);
          MLAKV_TRACE_AFTER(0, trace_k, 6, src);
          const uint32_t dst = base + S::kRaw + slot * S::kRawSlotBytes + tok * S::kRawPitch;
          const int n = src ? 16 : 0;
#pragma unroll
          for (int j = 0; j < kUnits; ++j) {
            const int c = 16 * (q + kTpt * j);
            cp_async16(dst + c, src ? src + c : a.cache, n);
          }
          if constexpr (kTileScales) {
#pragma unroll
            for (int c = 528 + 16 * q; c < 656; c += 16 * kTpt) cp_async16(dst + c, src ? src + c : a.cache, n);
            if (q < 4) cp_async4(dst + 512 + 4 * q, src ? src + 512 + 4 * q : a.cache, n / 4);
          }
          MLAKV_TRACE(0, trace_k, 7);
          if (q == 0) raw_ok[slot * kU + tok] = src != nullptr;
          if constexpr (S::kOwnerWidens) {
            mbar_arrive(raw_full_bar(slot));  // release: this thread's flag
            mbar_arrive_cp_async(raw_full_bar(slot));
          }
          if (++li_part == kParts) {
            li_part = 0;
            advance(li, lo, hi, sch, B);
          }
        }
        ++li_unit;
        cp_async_commit();  // one group per unit, empty past the end: the wait count stays fixed
      };
#pragma unroll
      for (int u = 0; u < kRawSlots; ++u) issue_unit();
      Cursor lc;
      seek(lc, first_b, lo, hi, sch, B);
      constexpr int kOwnParts = S::kOwnerWidens ? 1 : kParts;
      for (int k = 0; lc.b < B; ++k) {
        const int st = k & 1;
        MLAKV_TRACE(0, k, 2);
        mbar_wait(empty_bar(st), ((k >> 1) & 1) ^ 1);
        MLAKV_TRACE(0, k, 0);
#pragma unroll 1
        for (int h = 0; h < kOwnParts; ++h) {
          const int u = kParts * k + h, slot = u % kRawSlots;
          if constexpr (S::kOwnerWidens) mbar_wait(raw_full_bar(slot), (u / kRawSlots) & 1);
          else cp_async_wait<kRawSlots - 1>();
          if (h == 0) MLAKV_TRACE(0, k, 3);
          widen_unit(slot, st, h * kU + tok, tok, q);
          if (h == 0) MLAKV_TRACE(0, k, 4);
          if constexpr (S::kOwnerWidens) {
            __syncwarp();
            if (lane == 0) mbar_arrive(raw_free_bar(slot));
          }
          issue_unit(h == 0 ? k : -1);
          if (h == 0) MLAKV_TRACE(0, k, 5);
        }
        // No proxy fence before the arrival: the consumers run fence.proxy.async after their
        // wait on "full", which orders these generic stores before their wgmma as it does the
        // cp.async tiles'. Here it compiles to MEMBAR.ALL.CTA on the producer's path every tile
        // (1–2 % slower, docs/PERF.md, session 21).
        MLAKV_TRACE(0, k, 1);
        mbar_arrive(full_bar(st));
        // The owner's half: its slot's next unit goes out once the owner has widened it.
        if constexpr (S::kOwnerWidens) issue_unit();
        advance(lc, lo, hi, sch, B);
      }
      cp_async_wait<0>();
    }
    if (threadIdx.x == 0) MLAKV_TRACE_WIDE(0, kTrEnd);
    if (ncl > 1) cluster_sync();
    return;
  }

  // ------------------------------------------------------------------ consumers
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kConsumerRegs));
  if ((threadIdx.x & 127) == 0) MLAKV_TRACE_WIDE(threadIdx.x >> 7, kTrRoleReady);
  const int cw = wg - 1;                   // consumer warpgroup: rows [cw·NW, cw·NW + NW) of the CTA (ALT: all)
  const int rbase = ALT ? 0 : cw * NW;     // this warpgroup's first row in the CTA
  const int ct = threadIdx.x - 128;        // 0..255 over both consumer warpgroups
  const int wt = threadIdx.x & 127, w = wt >> 5, lane = wt & 31, g = lane >> 2, qd = lane & 3;
  const int bar_wg = 2 + cw;               // named barrier of this warpgroup
  const uint32_t pw_u = p_u + cw * S::kPTiles * S::kPBytes;
  __nv_bfloat16* pw = reinterpret_cast<__nv_bfloat16*>(smem + S::kP + cw * S::kPTiles * S::kPBytes);
  float* red_wg = red + cw * (2 * 4 * NR);  // [parity][warp][row]

  // Per-tensor FP8: the scale goes into the softmax scale and the output, never into the bf16
  // values (SPEC §6).
  float sc = a.scale_log2, out_scale = 1.0f;
  if (a.q_e4m3) sc *= __ldg(a.q_scale);
  if constexpr (F == CacheFormat::fp8) {
    const float ks = __ldg(a.k_scale);
    sc *= ks;
    out_scale = RS ? ks * (1.0f / kPScaleRs) : ks;  // RS: P is stored times kPScaleRs
  } else if constexpr (RS) {
    out_scale = 1.0f / kPScaleRs;
  }
  constexpr bool kF16 = S::kF16Stage;  // fp16 stage, Q's latent columns and P (fp8_ds_mla pairs)
  if constexpr (kF16) {
    sc *= 1 << kF16Shift;
    out_scale = 1 << kF16Shift;
  }

  // A new request's Q rows to shared memory (both warpgroups read the tile), once every consumer
  // is past its last Q·Kᵀ of the previous request. All of a thread's chunks are loaded (before
  // that barrier) ahead of any store: a load → store loop paid one global round trip per chunk
  // (18 at 64 rows) on the path of the request's first Q·Kᵀ (ncu: 4 % of the 64-row form's
  // samples waited there). FP8 at 32 rows keeps the loop: the registers for its nine chunks cost
  // that form a spill and 1.6 % (fp8 B=128 H=128 4K).
  auto q_chunk_at = [&](int r, int ch) { return sm90::q_chunk_at<kRowsCta>(smem + S::kQ, r, ch); };
  auto load_q_tile = [&](int b) {
    // RS first: fp8 is kWiden in both of its forms, and the widened form's 32-row copy loop
    // below would take the register-operand form's Q (raw bf16, no row factors: NaN rows).
    if constexpr (RS) {
      load_q_rows_f16<kRowsCta, S::kDsRs>(a, b, row0, smem + S::kQ, reinterpret_cast<float*>(smem + S::kQf), ct, 1);
    } else if constexpr (kWiden && !RM && NR >= 32 && !kTileScales) {
      named_sync(1, 256);
      for (int idx = ct; idx < kRowsCta * 72; idx += 256) {
        const int r = idx / 72, ch = idx - r * 72;
        *q_chunk_at(r, ch) = load_q_chunk(a, b, row0 + r, ch);
      }
      fence_async_smem();
      named_sync(1, 256);
    } else {
      load_q_rows<kRowsCta, kF16>(a, b, row0, smem + S::kQ, ct, 1);
    }
  };

  // Both forms, at a segment's end: the partial slot this part writes for request b (−1: the
  // request is not split, the output is written directly); the fused path's in-grid merge
  // records it (only a part's first and last segment can be split) and merges after the loop.
  PartSlots slots;
  const int payload = sch.header(0);
  auto segment_slot = [&](int b) { return slots.slot(a, sch, b, part, payload); };
  auto merge_in_grid = [&]() { slots.merge_in_grid<kRowsCta>(a, sch, row0, ct, smem); };
  static_assert(S::kQ >= kMergeScratchBytes, "the in-grid merge's scratch lies in the KV stages");

  if constexpr (RM) {
    // Rows as M (64 rows per CTA), with the two warpgroups in a seesaw: tile k's S = Q·Kᵀ (36
    // m64n64k16, Q and the K tile K-major from shared memory) is computed by warpgroup k & 1 only,
    // which also runs the tile's softmax (a row's 64 tokens lie in one quad of one warp) from the
    // row maxima the other published after tile k − 1. Warpgroup cw owns output columns
    // [256·cw, 256·cw + 256) and adds every tile's P·V there (m64n256k16, P from registers): its
    // own tiles' P as computed, the other's read from the one shared P buffer.
    // Order inside a warpgroup's tile k: whichever is ready first of this tile's stage and the
    // other's publication of tile k − 1 (row maxima m and P, behind its "published" mbarrier).
    // Publication first: o moves to m, the other's P·V is issued, then Q·Kᵀ, and tile k − 1's
    // stage is released as soon as that P·V is done. Stage first: Q·Kᵀ, then the publication and
    // its P·V at once with P scaled onto o's current reference maxima (2^(m − ref) ≥ 1; o itself
    // cannot be rescaled while Q·Kᵀ is in flight: ptxas then serializes every wgmma). Either
    // way the softmax from m once both are done (P·V's registers free: no spills); P published;
    // o rescaled to the new maxima and own P·V. In the stage-first order a row whose maximum
    // jumped by more than kMaxJump (a factor 2^64; fp16 P: 2^15, within fp16's range), or the
    // first visible one, takes a slow branch: Q·Kᵀ awaited, o rescaled, unscaled P. Each
    // warpgroup's l covers its own tiles, over the same reference as its o; at a segment's end
    // both references are the final maxima.
    // The P buffer has one writer at a time: a warpgroup reads the other's P into registers
    // before it publishes its own. Every wgmma is awaited in the branch that issued it.
    // Fragment of an m64n64 accumulator: row 16w + g + 8i, column 8j + 2qd + e at [4j + 2i + e];
    // P's A fragments: k-step c, register r holds row g + 8(r & 1), tokens 16c + 8(r >> 1) + 2qd.
    constexpr float kMaxJump = kF16 ? 15.0f : 64.0f;
    float* const row_m = red;       // [64] the row maxima published with the last P
    float* const row_l = red + 64;  // [2][64] each warpgroup's row sums at a segment's end
    float o[4][32];                 // column block cb of this warpgroup's 256 columns
    float o_ref[2], l_run[2];       // o's and l's reference row maxima; this thread's share of l
    int lim[2];
    auto rescale = [&](int i, float alpha) { rm_rescale(o, i, alpha); };
    auto release = [&](int st) {
      __syncwarp();
      if (lane == 0) {
        if (ncl > 1) fence_release_cluster();
        mbar_arrive(empty_bar(st));
        if (ncl > 1) mbar_arrive_remote(empty_bar(st), crank ^ 1);
      }
    };
    auto p_at = [&](int c, int r) { return frag_word(smem + S::kP, c, r, w, g, qd); };
    // Warpgroup o's tiles are o, o + 2, ...: tile kt's publication is phase kt >> 1 of its
    // barrier (128 arrivals, one per thread that wrote P). The owner cannot run two phases ahead:
    // it publishes tile kt + 2 only after reading tile kt + 1's P, published after tile kt's
    // was read.
    auto pub_bar = [&](int kt) { return bar_u + 32 + 8 * (kt & 1); };
    // The other's publication of tile kt: its row maxima and its P (into registers).
    auto take_pub = [&](int kt, float (&m_in)[2], uint32_t (&pb)[4][4]) {
      // Complete already: orders the stage's bytes here (FP8 pairs: the peer's st.async half is
      // released at cluster scope).
      if (kWiden && ncl > 1) mbar_wait<true>(full_bar(kt & 1), (kt >> 1) & 1);
      else mbar_wait(full_bar(kt & 1), (kt >> 1) & 1);
      fence_async_smem();
      mbar_wait(pub_bar(kt), (kt >> 1) & 1);
#pragma unroll
      for (int i = 0; i < 2; ++i) m_in[i] = row_m[16 * w + g + 8 * i];
#pragma unroll
      for (int c = 0; c < 4; ++c)
#pragma unroll
        for (int r = 0; r < 4; ++r) pb[c][r] = *p_at(c, r);
    };
    // o += P · V over this warpgroup's columns of tile kt's stage, P from registers.
    auto issue_pv = [&](int kt, const uint32_t (&pf)[4][4]) {
#pragma unroll
      for (int cb = 0; cb < 4; ++cb) pin(o[cb]);
      const uint64_t v_desc = desc_sw128(base + (kt & 1) * kStageBytes + cw * 4 * 8192, 8192, 1024);
      wg_fence();
#pragma unroll
      for (int c = 0; c < 4; ++c)
        MmaRS256<kF16>::run(*reinterpret_cast<float(*)[128]>(&o[0][0]), pf[c], desc_plus(v_desc, c * 2048));
      wg_commit();
    };
    auto pv_done = [&](uint32_t (&pf)[4][4]) {
#pragma unroll
      for (int cb = 0; cb < 4; ++cb) pin(o[cb]);
#pragma unroll
      for (int c = 0; c < 4; ++c)  // the wgmma read them asynchronously: live until the wait
        asm volatile("" : "+r"(pf[c][0]), "+r"(pf[c][1]), "+r"(pf[c][2]), "+r"(pf[c][3])::"memory");
    };
    // o and l onto reference maxima m (no wgmma in flight).
    auto move_ref = [&](const float (&m)[2]) {
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const float alpha = exp2f(o_ref[i] - (m[i] == -INFINITY ? 0.0f : m[i]));
        rescale(i, alpha);
        l_run[i] *= alpha;
        o_ref[i] = m[i];
      }
    };

    Cursor cs;
    seek(cs, first_b, lo, hi, sch, B);
    int seg_t0 = cs.t;
    for (int k = 0; cs.b < B; ++k) {
      const int st = k & 1;
      const int b = cs.b;
      const bool seg_first = cs.t == seg_t0, seg_last = cs.t + 1 == cs.t_end;
      if (seg_first) {
        load_q_tile(b);
        const int L = __ldg(a.seq_lens + b * a.sl_s0);
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          lim[i] = row_limit(a, row0 + 16 * w + g + 8 * i, L);
          o_ref[i] = -INFINITY;
          l_run[i] = 0.0f;
        }
#pragma unroll
        for (int cb = 0; cb < 4; ++cb)
#pragma unroll
          for (int r = 0; r < 32; ++r) o[cb][r] = 0.0f;
      }
      if (st == cw) {
        MLAKV_TRACE(1 + cw, k, 0);
        const uint32_t stage_u = base + st * kStageBytes;
        float s[32];
#pragma unroll
        for (int r = 0; r < 32; ++r) s[r] = 0.0f;
        pin(s);
        auto issue_qk = [&]() {
          if (kWiden && ncl > 1) mbar_wait<true>(full_bar(st), (k >> 1) & 1);
          else mbar_wait(full_bar(st), (k >> 1) & 1);
          MLAKV_TRACE(1 + cw, k, 7);
          fence_async_smem();  // the cp.async (generic proxy) bytes are read by wgmma (async proxy)
          const uint64_t q_desc = desc_sw128(q_u, 16, 1024), k_desc = desc_sw128(stage_u, 16, 1024);
          wg_fence();
#pragma unroll
          for (int kk = 0; kk < 36; ++kk) {
            const uint32_t off = (kk >> 2) * 8192 + (kk & 3) * 32;  // Q and the tile: 8192 B per 64 columns
            if (kF16 && kk < 32) MmaSS64<true>::run(s, desc_plus(q_desc, off), desc_plus(k_desc, off), kk);
            else MmaSS64<>::run(s, desc_plus(q_desc, off), desc_plus(k_desc, off), kk);  // the rope: bf16 always
          }
          wg_commit();
        };

        // ---- mask, scale, online softmax from the maxima m_in; P as bf16; published ----
        float m_in[2] = {-INFINITY, -INFINITY}, m_new[2], sum[2];
        uint32_t pa[4][4];
        auto softmax_publish = [&]() {
          rm_tile_softmax(a, s, tok_ok + st * kTile, sch.len_local(b), cs.t * kTile, lim, sc, m_in, m_new, sum, qd);
#pragma unroll
          for (int c = 0; c < 4; ++c)
#pragma unroll
            for (int r = 0; r < 4; ++r) {
              pa[c][r] = kF16 ? pack_f16(s[8 * c + 2 * r], s[8 * c + 2 * r + 1]) : pack_bf16(s[8 * c + 2 * r], s[8 * c + 2 * r + 1]);
              *p_at(c, r) = pa[c][r];
            }
#pragma unroll
          for (int i = 0; i < 2; ++i)
            if (qd == 0) row_m[16 * w + g + 8 * i] = m_new[i];
          mbar_arrive(pub_bar(k));
        };

        if (!seg_first) {
          uint32_t pb[4][4];
          // Whichever of this tile's stage and the other's publication of tile k − 1 comes first
          // goes first (a warpgroup's wgmma complete in order, so this also orders the release of
          // tile k − 1's stage): the warpgroup follows the stage if any of its warps saw it full.
          bool full_seen = false;
          for (;;) {
            if (mbar_test(full_bar(st), (k >> 1) & 1)) {
              full_seen = true;
              break;
            }
            if (mbar_test(pub_bar(k - 1), ((k - 1) >> 1) & 1)) break;
          }
          MLAKV_TRACE_EITHER(1 + cw, k, full_seen ? 1 : 5, full_seen ? 5 : 1);
          if (!wg_any(2 + cw, full_seen)) {
            // Publication first: nothing in flight, so o moves to its maxima and P is used as is.
            // Release (fp8's default): the other's stage goes back as soon as its P·V is done,
            // before this tile's bytes are awaited (session 9: with split requests, releasing it
            // after Q·Kᵀ's issue chained one refill per tile). Overlap (bf16's default): Q·Kᵀ
            // queued behind that P·V once the bytes land, the stage released when the P·V is
            // done (session 23: with whole requests −4 to −5 % at bf16 B=128 H=128, +7 % on the
            // FP8 pairs, whose producer widens into the stage). Adaptive: overlap only where the
            // bytes have already landed.
            take_pub(k - 1, m_in, pb);
            move_ref(m_in);
            issue_pv(k - 1, pb);
            const bool landed = a.rm_order == RmOrder::adaptive && wg_any(2 + cw, mbar_test(full_bar(st), (k >> 1) & 1));
            if (a.rm_order == RmOrder::overlap || landed) {
              issue_qk();
              wg_wait1();
              pv_done(pb);
              release(st ^ 1);
            } else {
              wg_wait0();
              pv_done(pb);
              release(st ^ 1);
              issue_qk();
            }
            wg_wait0();
          } else {
            issue_qk();
            take_pub(k - 1, m_in, pb);
            float sp[2];
            bool slow = false;
#pragma unroll
            for (int i = 0; i < 2; ++i) {
              const float d = m_in[i] - o_ref[i];
              sp[i] = exp2f(d);
              slow |= !(d <= kMaxJump);  // NaN (both −inf) and +inf included
            }
            if (!wg_any(2 + cw, slow)) {
#pragma unroll
              for (int i = 0; i < 2; ++i)
                if (__any_sync(0xffffffffu, sp[i] != 1.0f))
#pragma unroll
                  for (int c = 0; c < 4; ++c)
#pragma unroll
                    for (int r = i; r < 4; r += 2) pb[c][r] = kF16 ? scale_f16x2(pb[c][r], sp[i]) : scale_bf16x2(pb[c][r], sp[i]);
              issue_pv(k - 1, pb);
              wg_wait0();  // Q·Kᵀ and the other's P·V (pb dead before the softmax: no spills)
              pv_done(pb);
            } else {
              wg_wait0();
              move_ref(m_in);
              issue_pv(k - 1, pb);
              wg_wait0();
              pv_done(pb);
            }
            release(st ^ 1);
          }
        } else {
          issue_qk();
          wg_wait0();
        }
        pin(s);
        MLAKV_TRACE(1 + cw, k, 2);
        softmax_publish();
        MLAKV_TRACE(1 + cw, k, 3);

        // ---- o onto the new maxima, own P · V ----
        move_ref(m_new);
#pragma unroll
        for (int i = 0; i < 2; ++i) l_run[i] += sum[i];
        issue_pv(k, pa);
        wg_wait0();
        pv_done(pa);
        release(st);
        MLAKV_TRACE(1 + cw, k, 4);
      } else if (seg_last) {
        // The other's tile ends the segment: account for it now.
        float m_in[2];
        uint32_t pb[4][4];
        take_pub(k, m_in, pb);
        move_ref(m_in);
        issue_pv(k, pb);
        wg_wait0();
        pv_done(pb);
        release(st);
      }

      // ---- end of segment: normalized output, or a partial for the combine kernel ----
      if (seg_last) {
        // The next writes of row_l come after the next segment's Q barrier.
        rm_write_rows(a, o, l_run, row_l, 5, o_ref, b, segment_slot(b), row0, cw, w, g, qd, out_scale);
      }
      advance(cs, lo, hi, sch, B);
      if (cs.b != b) seg_t0 = cs.t;
    }
    if (wt == 0) MLAKV_TRACE_WIDE(1 + cw, kTrEnd);
    if (ncl > 1) cluster_sync();
    merge_in_grid();
    return;
  }

  // Fragment (j, i, e) of an m64nNW accumulator: token / output dim 16w + g + 8i (+ 64·mtile),
  // query row 8j + 2qd + e of this warpgroup.
  float o[8][NS];
  float m_st[NJ][2], l_st[NJ][2];
  int lim[NJ][2];
  float scr[NJ][2];  // each row's softmax scale (RS: times its Q row's 2^-σ)
  // kDsRs: this warp's P·V reference (o holds Σ P · v · scale / r_ref over its output dims, which
  // all lie in tile-scale group w), 0 before the request's first tile.
  [[maybe_unused]] float r_ref = 0.0f;

  Cursor cs;
  seek(cs, first_b, lo, hi, sch, B);
  int seg_t0 = cs.t;
  for (int k = 0; cs.b < B; ++k) {
    const int st = RS ? k % S::kStages : k & 1, par = k & 1;
    const int b = cs.b;
    if (cs.t == seg_t0) {
      // New request: Q rows to shared memory (both warpgroups read the tile), fresh state.
      load_q_tile(b);
      const int L = __ldg(a.seq_lens + b * a.sl_s0);
#pragma unroll
      for (int j = 0; j < NJ; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int gr = row0 + rbase + 8 * j + 2 * qd + e;
          const int qi = gr / a.heads;
          lim[j][e] = gr >= a.rows ? INT_MIN : a.causal ? L - a.s_q + qi + 1 : INT_MAX;
          scr[j][e] = RS ? sc * reinterpret_cast<const float*>(smem + S::kQf)[rbase + 8 * j + 2 * qd + e] : sc;
          m_st[j][e] = -INFINITY;
          l_st[j][e] = 0.0f;
        }
#pragma unroll
      for (int mt = 0; mt < 8; ++mt)
#pragma unroll
        for (int r = 0; r < NS; ++r) o[mt][r] = 0.0f;
      r_ref = 0.0f;
    }

    float* red_p = red_wg + par * (4 * NR);
    if (!ALT || (k & 1) == cw) {  // ALT: only this warpgroup's tiles
      if constexpr (S::kOwnerWidens) {
        // The tile's second half, from the raw ring into this warpgroup's own stage (free: its
        // last tile's P · V is complete), while the producer widens the first.
        // A parity wait is exact only within one phase: the slot's previous unit (the other
        // warpgroup's half of tile k − 1) must have landed and been widened first, which its
        // release says (and that one's predecessor was released before this unit was issued).
        const int u = kParts * k + 1, slot = u % kRawSlots;
        if (u >= kRawSlots) mbar_wait(raw_free_bar(slot), ((u / kRawSlots) - 1) & 1);
        mbar_wait(raw_full_bar(slot), (u / kRawSlots) & 1);
        widen_unit(slot, st, kU + unit_tok(wt), unit_tok(wt), unit_q(wt));
        __syncwarp();
        if (lane == 0) mbar_arrive(raw_free_bar(slot));
        fence_async_smem();
        named_sync(bar_wg, 128);
        MLAKV_TRACE(1 + cw, k, 6);
      }
      mbar_wait(full_bar(st), (k / S::kStages) & 1);
      MLAKV_TRACE(1 + cw, k, 0);
      // The cp.async (generic proxy) bytes are read by wgmma (async proxy); RS reads them itself.
      if constexpr (!RS) fence_async_smem();
      const uint32_t stage_u = base + st * S::kStBytes;
      const int tk0 = 16 * w + g;  // this thread's tokens: tk0 (i = 0), tk0 + 8 (i = 1)
      const uint8_t* const raw_tile = smem + st * S::kStBytes;
      constexpr int kPitch = S::kRsPitch;
      // kDsRs: the tile scales of this thread's Q·Kᵀ tokens (chunk 32 of a token: four fp32), and
      // its Vᵀ registers' factors: token t's scale for group w over the tile's reference R (the
      // power of two at or above the warp's largest scale of the tile, and at or above r_ref ·
      // 2^-64 so that o's rescale by r_ref / R stays finite), as fp16 pairs (t, t + 4) for
      // t = 16ks + qd + 8e (pair (ks, e): word 2·(ks & 1) + e of vr[ks >> 1]). Lane l computes
      // pair (ks, e, qd) = (l >> 3, (l >> 2) & 1, l & 3) into the warp's 32 words, read back by
      // quad. fp16 keeps a ratio's 11 bits down to 2^-14 (a token whose scale is 2^14 below the
      // tile's largest in its group is coarser).
      [[maybe_unused]] float4 ksc[2];
      [[maybe_unused]] uint4 vr[2];
      [[maybe_unused]] float r_f = 1.0f;  // o's rescale to this tile's reference: r_ref / R
      if constexpr (S::kDsRs) {
        auto scales = [&](int t) { return reinterpret_cast<const float*>(raw_tile + t * kPitch + ((32 ^ (t & 3)) << 4)); };
#pragma unroll
        for (int i = 0; i < 2; ++i) ksc[i] = *reinterpret_cast<const float4*>(scales(tk0 + 8 * i));
        const int t = 16 * (lane >> 3) + 8 * ((lane >> 2) & 1) + (lane & 3);
        const float s0 = scales(t)[w], s1 = scales(t + 4)[w];
        float mx = fmaxf(s0, s1);
        mx = dev::warp_max(mx);
        // The power of two at or above mx (inf stays inf), at least FLT_MIN.
        const float rt = __uint_as_float((__float_as_uint(fmaxf(mx, FLT_MIN)) + 0x7fffffu) & 0xff800000u);
        const float rr = fmaxf(rt, r_ref * 0x1p-64f), inv = 1.0f / rr;
        r_f = r_ref * inv;
        r_ref = rr;
        uint32_t* const vr_w = reinterpret_cast<uint32_t*>(smem + S::kVr) + (4 * cw + w) * 32;
        vr_w[8 * (lane & 3) + 2 * (lane >> 3) + ((lane >> 2) & 1)] = pack_f16(s0 * inv, s1 * inv);
        __syncwarp();
#pragma unroll
        for (int x = 0; x < 2; ++x) vr[x] = reinterpret_cast<const uint4*>(vr_w + 8 * qd)[x];
      }
      // RS, P·V in half k-steps h (k-step h / 2, m-tiles 4·(h & 1) .. + 3), converted one ahead
      // into three register sets, so that a set is rewritten only once the wgmma that read it two
      // groups back are done (wait_group 2) and no wait lands on the last group issued.
      // This thread's Vᵀ rows are output dims 16·(8w + g) + 2·mt + i (m-tile mt, fragment row
      // g + 8i), its k columns 2qd + e + 8h' tokens 16ks + qd + 4·(2h' + e): each token's 16 dims
      // are one 16-byte read (at even h, kept in vx for the odd one), each register one prmt
      // pairing two tokens' bytes.
      // 32 rows (a 128-float o): two Vᵀ register sets, two K sets and one Q·Kᵀ accumulator, so
      // that ptxas keeps the wgmma asynchronous (three sets serialized them: C7512).
      constexpr int VS = NR == 16 ? 3 : 2, KS = NR == 16 ? 3 : 2, NA = NR == 16 ? 2 : 1;
      [[maybe_unused]] uint32_t vb[VS][4][4];
      [[maybe_unused]] uint4 vx[4];
      // The four reads of half-k-step pair (h, h + 1), h even. kVPrefetch: issued at the end of
      // half h − 1's conversion (vx is free then), so that they land under half h − 1's wgmma
      // issue and wait instead of on the chain.
      auto v_load = [&](int h) {
#pragma unroll
        for (int c = 0; c < 4; ++c)
          vx[c] = *reinterpret_cast<const uint4*>(raw_tile + (8 * h + qd + 4 * c) * kPitch + (((8 * w + g) ^ qd) << 4));
      };
      [[maybe_unused]] auto v_half = [&](int h, uint32_t(&d)[4][4]) {
        if ((h & 1) == 0 && (!kVPrefetch || h == 0)) v_load(h);
#pragma unroll
        for (int m = 0; m < 4; ++m) {
          const int mt = 4 * (h & 1) + m, u = mt >> 1;
          const uint32_t x0 = (&vx[0].x)[u], x1 = (&vx[1].x)[u], x2 = (&vx[2].x)[u], x3 = (&vx[3].x)[u];
          // Bytes 2·(mt & 1) (dim 2mt) and + 1 (dim 2mt + 1) of two tokens, paired per dim.
          const uint32_t sel = mt & 1 ? 0x7362u : 0x5140u;
          uint32_t y01, y23;
          asm("prmt.b32 %0, %1, %2, %3;\n" : "=r"(y01) : "r"(x0), "r"(x1), "r"(sel));
          asm("prmt.b32 %0, %1, %2, %3;\n" : "=r"(y23) : "r"(x2), "r"(x3), "r"(sel));
          e4m3x4_to_f16x2x2(y01, d[m][0], d[m][1]);
          e4m3x4_to_f16x2x2(y23, d[m][2], d[m][3]);
          if constexpr (S::kDsRs) {
            // Registers 0–1 pair tokens (t, t + 4) of pair (h / 2, 0), registers 2–3 of (h / 2, 1).
            const uint32_t* pr = &(&vr[h >> 2].x)[2 * ((h >> 1) & 1)];
#pragma unroll
            for (int x = 0; x < 4; ++x) asm("mul.rn.f16x2 %0, %0, %1;\n" : "+r"(d[m][x]) : "r"(pr[x >> 1]));
          }
        }
        if (kVPrefetch && (h & 1) && h + 1 < 8) v_load(h + 1);
      };

      // ---- Sᵀ = K · Qᵀ over 576 dims: 36 k-steps of 16 ----
      const uint64_t k_desc = desc_sw128(stage_u, 16, 1024), q_desc = desc_sw128(q_u + rbase * 128, 16, 1024);
      auto qk = [&](float(&acc)[NS], int kk, int first) {
        const uint64_t da = desc_plus(k_desc, (kk >> 2) * 8192 + (kk & 3) * 32);
        const uint64_t db = desc_plus(q_desc, (kk >> 2) * (kRowsCta * 128) + (kk & 3) * 32);
        Mma<NR, 0>::run(acc, da, db, first ? 0 : 1);
      };
      float s[NS];
#pragma unroll
      for (int r = 0; r < NS; ++r) s[r] = 0.0f;
      if constexpr (RS) {
        // K as A from registers: 64-column block c of tokens tk0 and tk0 + 8 is one 16-byte read
        // each (columns 64c + 16qd ..), word j of it k-step 4c + j (Q's columns permuted to match,
        // load_q_rows_f16). Three register sets, block c + 1 converted while blocks c and c − 1 run.
        const uint8_t* const k0 = raw_tile + tk0 * kPitch;
        // Block c's two 16-byte reads. kKPrefetch: the e4m3 blocks' reads go out a block ahead (into
        // kr, converted by the next k_block), so that the conversion finds them landed instead of
        // waiting out the shared-memory latency on the chain (short-scoreboard stalls, session 31).
        auto k_load = [&](int c, uint4(&x)[2]) {
          const int off = ((4 * c + qd) ^ (g & 3)) << 4;  // tk0 & 3 == (tk0 + 8) & 3 == g & 3
          x[0] = *reinterpret_cast<const uint4*>(k0 + off);
          x[1] = *reinterpret_cast<const uint4*>(k0 + 8 * kPitch + off);
        };
        [[maybe_unused]] uint4 kr[2];
        auto k_prefetch = [&](int c) {
          if (kKPrefetch && c < 9 && !(S::kDsRs && c == 8)) k_load(c, kr);
        };
        auto k_block = [&](int c, uint32_t(&d)[16]) {
          if (S::kDsRs && c == 8) {
            // fp8_ds_mla's bf16 rope (chunks 33–40): dims 16qd .. 16qd + 15 of each token in two
            // reads, words 2j and 2j + 1 of them k-step j's (the same k order as the e4m3 blocks).
            const int o0 = ((33 + 2 * qd) ^ (g & 3)) << 4, o1 = ((34 + 2 * qd) ^ (g & 3)) << 4;
            const uint4 x[2][2] = {{*reinterpret_cast<const uint4*>(k0 + o0), *reinterpret_cast<const uint4*>(k0 + o1)},
                                   {*reinterpret_cast<const uint4*>(k0 + 8 * kPitch + o0),
                                    *reinterpret_cast<const uint4*>(k0 + 8 * kPitch + o1)}};
#pragma unroll
            for (int j = 0; j < 4; ++j)
#pragma unroll
              for (int i = 0; i < 2; ++i) {
                d[4 * j + i] = (&x[i][j >> 1].x)[2 * (j & 1)];
                d[4 * j + 2 + i] = (&x[i][j >> 1].x)[2 * (j & 1) + 1];
              }
            return;
          }
          uint4 x[2];
          if constexpr (kKPrefetch) x[0] = kr[0], x[1] = kr[1];
          else k_load(c, x);
          const uint4 x0 = x[0], x1 = x[1];
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            e4m3x4_to_f16x2x2((&x0.x)[j], d[4 * j], d[4 * j + 2]);
            e4m3x4_to_f16x2x2((&x1.x)[j], d[4 * j + 1], d[4 * j + 3]);
          }
        };
        uint32_t ka[KS][16];
        float sa[NA][NS];
        zero_pinned(sa);
        // kDsRs: tile-scale group t (blocks 2t, 2t + 1; t = 4 the rope, unscaled) into sa[t & 1],
        // taken into s times the token's scale once complete (t = 0..2 two blocks later, under
        // the wait for the K registers; 3 and 4 at the end).
        [[maybe_unused]] auto take_group = [&](int t) {
          pin(sa[t & 1]);
#pragma unroll
          for (int r = 0; r < NS; ++r) s[r] += (t < 4 ? (&ksc[(r >> 1) & 1].x)[t] : 1.0f) * sa[t & 1][r];
        };
        k_prefetch(0);
        k_block(0, ka[0]);
        k_prefetch(1);
#pragma unroll
        for (int c = 0; c < 9; ++c) {
          wg_fence();
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const uint32_t* ar = &ka[c % KS][4 * j];
            const uint64_t db = desc_plus(q_desc, c * (kRowsCta * 128) + j * 32);
            if constexpr (S::kDsRs) {
              if (c == 8) MmaRS<NR, true>::run(sa[0], ar[0], ar[1], ar[2], ar[3], db, j > 0);
              else MmaRS<NR>::run(sa[(c >> 1) & 1], ar[0], ar[1], ar[2], ar[3], db, (c & 1) || j > 0);
            } else {
              MmaRS<NR>::run(sa[c % NA], ar[0], ar[1], ar[2], ar[3], db, c >= NA || j > 0);
            }
          }
          wg_commit();
          if (c + 1 < 9) {
            if constexpr (KS == 3) wg_wait2();  // block c − 2's wgmma have read ka[(c + 1) % 3]
            else wg_wait1();
            if constexpr (S::kDsRs)
              if (c & 1 && c >= 3) take_group((c - 3) >> 1);  // blocks ≤ c − 2 are complete
            k_block(c + 1, ka[(c + 1) % KS]);
            k_prefetch(c + 2);
          } else {
            MLAKV_TRACE(1 + cw, k, 5);
            v_half(0, vb[0]);
          }
        }
        wg_wait0();
        if constexpr (S::kDsRs) {
          take_group(3);
          take_group(4);
        } else {
#pragma unroll
          for (int c = 0; c < NA; ++c) pin(sa[c]);
#pragma unroll
          for (int r = 0; r < NS; ++r) s[r] = NA == 1 ? sa[0][r] : sa[0][r] + sa[NA - 1][r];
        }
      } else if constexpr (!kTileScales) {
        // kA independent accumulators, k-steps dealt round-robin, so that no wgmma waits for the
        // previous one's accumulator. Tried because a 16-row tile costs the ALT consumers
        // ~3.7 µs per warpgroup even with no loads and no widening (run 7); measured neutral
        // (run 8, within run-to-run noise), so that cost is not this dependency: see
        // docs/perf/decode-notes.md. This is the form the committed numbers were measured with.
        constexpr int kA = NR >= 32 ? (ALT ? 1 : 2) : 4;  // more spill at 32 rows (ALT: beside its merge)
        float sa[kA][NS];
        zero_pinned(sa);
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < 36; ++kk) qk(sa[kk % kA], kk, kk < kA);
        wg_commit();
        wg_wait0();
#pragma unroll
        for (int c = 0; c < kA; ++c) pin(sa[c]);
#pragma unroll
        for (int r = 0; r < NS; ++r) {
          float x = sa[0][r];
#pragma unroll
          for (int c = 1; c < kA; ++c) x += sa[c][r];
          s[r] = x;
        }
      } else if constexpr (NR >= 32) {
        // Each 128-dim tile has its own per-token scale. At 32 rows five accumulators do not fit
        // beside o: the groups (the rope last, unscaled) run two at a time, each scaled into s
        // as soon as it completes.
        float acc[2][NS];
        zero_pinned(acc);
        float4 c[2];
#pragma unroll
        for (int i = 0; i < 2; ++i) c[i] = *reinterpret_cast<const float4*>(scl + (st * kTile + tk0 + 8 * i) * 4);
        auto issue_group = [&](int t) {
          wg_fence();
#pragma unroll
          for (int j = 0; j < (t < 4 ? 8 : 4); ++j) qk(acc[t & 1], 8 * t + j, j == 0);
          wg_commit();
        };
        auto take_group = [&](int t) {
          pin(acc[t & 1]);
#pragma unroll
          for (int j = 0; j < NJ; ++j)
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
              for (int e = 0; e < 2; ++e) {
                const int r = 4 * j + 2 * i + e;
                s[r] += (t < 4 ? (&c[i].x)[t] : 1.0f) * acc[t & 1][r];
              }
        };
        issue_group(0);
        issue_group(1);
#pragma unroll
        for (int t = 0; t < 4; ++t) {
          wg_wait1();
          take_group(t);
          if (t + 2 <= 4) issue_group(t + 2);
        }
        wg_wait0();
        take_group(4);
      } else {
        // Each 128-dim tile has its own per-token scale: separate partial products, scaled after.
        float sg[5][NS];
        zero_pinned(sg);
        wg_fence();
        // The five groups' k-steps interleaved, as the kA accumulators above.
#pragma unroll
        for (int j = 0; j < 8; ++j)
#pragma unroll
          for (int t = 0; t < 5; ++t)
            if (t < 4 || j < 4) qk(sg[t], 8 * t + j, j == 0);
        wg_commit();
        wg_wait0();
#pragma unroll
        for (int t = 0; t < 5; ++t) pin(sg[t]);
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          const float4 c = *reinterpret_cast<const float4*>(scl + (st * kTile + tk0 + 8 * i) * 4);
#pragma unroll
          for (int j = 0; j < NJ; ++j)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int r = 4 * j + 2 * i + e;
              s[r] = c.x * sg[0][r] + c.y * sg[1][r] + c.z * sg[2][r] + c.w * sg[3][r] + sg[4][r];
            }
        }
      }

      // ---- mask, scale, tile maxima ----
      const int len = sch.len_local(b);
      bool okt[2];
      int64_t pos[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int jt = cs.t * kTile + tk0 + 8 * i;
        okt[i] = tok_ok[st * kTile + tk0 + 8 * i] != 0 && jt < len;
        pos[i] = global_pos(jt, a);
      }
      // Row n = 8j + 2qd + e's maximum over this warp's tokens, published for the warpgroup.
      auto publish_max = [&](int j, int e) {
        float mx = fmaxf(s[4 * j + e], s[4 * j + 2 + e]);
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 4));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 8));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 16));
        if (g == 0) red_p[w * NR + 8 * j + 2 * qd + e] = mx;
      };
      constexpr bool kLazy = RS && kLazyRescale;
#pragma unroll
      for (int j = 0; j < NJ; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
#pragma unroll
          for (int i = 0; i < 2; ++i) {
            float& x = s[4 * j + 2 * i + e];
            x = okt[i] && pos[i] < lim[j][e] ? x * scr[j][e] : -INFINITY;
          }
          if constexpr (!kLazy) publish_max(j, e);
        }
      if constexpr (!kLazy) {
        MLAKV_TRACE(1 + cw, k, 1);
        named_sync(bar_wg, 128);
        MLAKV_TRACE(1 + cw, k, 2);
      }

      // ---- online softmax; P (bf16) to shared memory as the K-major B operand [row][token] ----
      float4 vs[2];  // fp8_ds_mla: the tile scales of this thread's two tokens, applied to P
      if constexpr (kTileScales) {
#pragma unroll
        for (int i = 0; i < 2; ++i) vs[i] = *reinterpret_cast<const float4*>(scl + (st * kTile + tk0 + 8 * i) * 4);
      }
      float pv[NJ][2][2];  // this thread's P values (row 8j + 2qd + e, token i)
      // Element (row n, token tk0 + 8i) of a P tile [NR rows][64 tokens], K-major, 128-byte swizzle.
      // RS: token 16w + r (r = g + 8i) sits at P column 16w + 2·(r & 3) + (r >> 2 & 1) + 8·(r >> 3),
      // the k order of P·V's Vᵀ registers (v_kstep).
      const int pg = RS ? 2 * (g & 3) + (g >> 2) : g;
      auto p_at = [&](int n, int i) -> uint32_t {
        const uint32_t row_b = (n >> 3) * 1024 + (n & 7) * 128 + pg * 2;
        return (row_b + (((2 * w + i) ^ (n & 7)) << 4)) >> 1;
      };
      // fp8_ds_mla: P times the tile scales of groups g0 .. g0 + kPTiles − 1, one P tile each.
      auto write_scaled_p = [&](int j, int e, int g0) {
        const int n = 8 * j + 2 * qd + e;
#pragma unroll
        for (int t = 0; t < S::kPTiles; ++t)
#pragma unroll
          for (int i = 0; i < 2; ++i) {
            const float sc_t = (&vs[i].x)[g0 + t];
            pw[t * (S::kPBytes / 2) + p_at(n, i)] = __float2bfloat16_rn(pv[j][e][i] * sc_t);
          }
      };
      auto store_p = [&](int j, int e, float p0, float p1) {
        const int n = 8 * j + 2 * qd + e;
        pv[j][e][0] = p0, pv[j][e][1] = p1;
        if constexpr (RS) {
          __half* const ph = reinterpret_cast<__half*>(pw);
          ph[p_at(n, 0)] = __float2half_rn(p0 * kPScaleRs);
          ph[p_at(n, 1)] = __float2half_rn(p1 * kPScaleRs);
        } else if constexpr (!kTileScales) {
          pw[p_at(n, 0)] = __float2bfloat16_rn(p0);
          pw[p_at(n, 1)] = __float2bfloat16_rn(p1);
        } else {
          write_scaled_p(j, e, 0);
        }
      };
      // From the tile's row maxima in red_p (behind the barrier): new maxima, o and l rescaled, P.
      auto softmax_p = [&]() {
#pragma unroll
        for (int j = 0; j < NJ; ++j)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int n = 8 * j + 2 * qd + e;
            float mn = m_st[j][e];
#pragma unroll
            for (int ww = 0; ww < 4; ++ww) mn = fmaxf(mn, red_p[ww * NR + n]);
            const float mu = mn == -INFINITY ? 0.0f : mn;  // nothing visible yet: keep exp2 finite
            const float alpha = exp2f(m_st[j][e] - mu);
            m_st[j][e] = mn;
            // ex2.approx where a warpgroup holds 32 rows (session 24: fp8 H=32 −2.4 %); the 16-row
            // forms are bound by the FP8 producer's widening, and there it measured +1.4 to +2.3 %.
            // The register-operand form is bound by its consumers: there too.
            const float p0 = NR >= 32 || RS ? fast_exp2(s[4 * j + e] - mu) : exp2f(s[4 * j + e] - mu);
            const float p1 = NR >= 32 || RS ? fast_exp2(s[4 * j + 2 + e] - mu) : exp2f(s[4 * j + 2 + e] - mu);
            l_st[j][e] = l_st[j][e] * alpha + (p0 + p1);
            // Once a row's maximum settles, alpha is exactly 1 on most tiles: skip the 16 multiplies
            // (exact) unless some lane of the warp needs them (they were ~13 % of the instructions).
            // kDsRs: with o's move to this tile's reference (r_f, a power of two).
            const float fo = S::kDsRs ? alpha * r_f : alpha;
            if (__any_sync(0xffffffffu, fo != 1.0f)) {
#pragma unroll
              for (int mt = 0; mt < 8; ++mt) {
                o[mt][4 * j + e] *= fo;
                o[mt][4 * j + 2 + e] *= fo;
              }
            }
            store_p(j, e, p0, p1);
          }
        fence_async_smem();
        named_sync(bar_wg, 128);
      };
      if constexpr (kLazy) {
        // First on the running maxima as they are (P ≤ 2^kLazyTau); the warpgroup's vote at the
        // P barrier says whether any score of the tile lay above that (or a row saw its first
        // visible token), and only then are the maxima exchanged and P written again.
        bool over = false;
        float psum[NJ][2];
#pragma unroll
        for (int j = 0; j < NJ; ++j)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float ref = m_st[j][e], mu = ref == -INFINITY ? 0.0f : ref;
            over |= fmaxf(s[4 * j + e], s[4 * j + 2 + e]) > ref + kLazyTau;
            const float p0 = fast_exp2(s[4 * j + e] - mu), p1 = fast_exp2(s[4 * j + 2 + e] - mu);
            psum[j][e] = p0 + p1;
            store_p(j, e, p0, p1);
          }
        fence_async_smem();
        MLAKV_TRACE(1 + cw, k, 1);
        if (wg_any(bar_wg, over)) {
#pragma unroll
          for (int j = 0; j < NJ; ++j)
#pragma unroll
            for (int e = 0; e < 2; ++e) publish_max(j, e);
          named_sync(bar_wg, 128);  // the maxima published
          softmax_p();
        } else {
#pragma unroll
          for (int j = 0; j < NJ; ++j)
#pragma unroll
            for (int e = 0; e < 2; ++e) l_st[j][e] += psum[j][e];
          if constexpr (S::kDsRs)
            if (r_f != 1.0f)  // warp-uniform: o onto this tile's scale reference
#pragma unroll
              for (int mt = 0; mt < 8; ++mt)
#pragma unroll
                for (int r = 0; r < NS; ++r) o[mt][r] *= r_f;
        }
        MLAKV_TRACE(1 + cw, k, 2);
      } else {
        softmax_p();
      }
      MLAKV_TRACE(1 + cw, k, 3);

      // ---- Oᵀ += Vᵀ · Pᵀ: 8 column blocks of 64 dims × 4 k-steps of 16 tokens ----
#pragma unroll
      for (int mt = 0; mt < 8; ++mt) pin(o[mt]);
      wg_fence();
      const uint64_t p_desc = desc_sw128(pw_u, 16, 1024), v_desc = desc_sw128(stage_u, 8192, 1024);
      if constexpr (RS) {
        // Vᵀ as A from registers, half a k-step at a time (v_half).
#pragma unroll
        for (int h = 0; h < 8; ++h) {
          if (h > 0) wg_fence();
#pragma unroll
          for (int m = 0; m < 4; ++m) {
            const uint32_t* ar = vb[h % VS][m];
            MmaRS<NR>::run(o[4 * (h & 1) + m], ar[0], ar[1], ar[2], ar[3], desc_plus(p_desc, (h >> 1) * 32), 1);
          }
          wg_commit();
          if (h + 1 < 8) {
            if constexpr (VS == 3) wg_wait2();
            else wg_wait1();
            v_half(h + 1, vb[(h + 1) % VS]);
          }
        }
        MLAKV_TRACE(1 + cw, k, 7);
      } else {
      // fp8_ds_mla: columns [64mt, 64mt+64) lie in tile-scale group mt/2; with two P tiles, the
      // second pass rewrites them for groups 2 and 3 once the first pass has read them.
      constexpr int kPasses = kTileScales ? 4 / S::kPTiles : 1, kMtPass = 8 / kPasses;
#pragma unroll
      for (int pass = 0; pass < kPasses; ++pass) {
        if (pass > 0) {
          wg_wait0();
          named_sync(bar_wg, 128);  // every warp's wgmma of the last pass has read the P tiles
#pragma unroll
          for (int j = 0; j < NJ; ++j)
#pragma unroll
            for (int e = 0; e < 2; ++e) write_scaled_p(j, e, pass * S::kPTiles);
          fence_async_smem();
          named_sync(bar_wg, 128);
          wg_fence();
        }
#pragma unroll
        for (int ks = 0; ks < 4; ++ks) {
#pragma unroll
          for (int mm = 0; mm < kMtPass; ++mm) {
            const int mt = pass * kMtPass + mm;
            const uint32_t pt_off = kTileScales ? ((mt >> 1) % S::kPTiles) * S::kPBytes : 0;
            const uint64_t db = desc_plus(p_desc, pt_off + ks * 32);
            const uint64_t da = desc_plus(v_desc, mt * 8192 + ks * 2048);
            Mma<NR, 1>::run(o[mt], da, db, 1);
          }
        }
        wg_commit();
      }
      }  // !RS
      wg_wait0();
#pragma unroll
      for (int mt = 0; mt < 8; ++mt) pin(o[mt]);
      __syncwarp();
      if (lane == 0) mbar_arrive(empty_bar(st));
      MLAKV_TRACE(1 + cw, k, 4);
    }  // this warpgroup's tile

    // ---- end of segment: normalized output, or a partial for the combine kernel ----
    if (cs.t + 1 == cs.t_end) {
      if constexpr (S::kDsRs)  // o from this warp's reference back to the values (two warpgroups, two references)
#pragma unroll
        for (int mt = 0; mt < 8; ++mt)
#pragma unroll
          for (int r = 0; r < NS; ++r) o[mt][r] *= r_ref;
      // Row sums: per-thread partials over g, then over the 4 warps (red_p is free again: every
      // warp of this warpgroup read its maxima before the P barrier).
      float lsum[NJ][2];
#pragma unroll
      for (int j = 0; j < NJ; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float x = l_st[j][e];
          x += __shfl_xor_sync(0xffffffffu, x, 4);
          x += __shfl_xor_sync(0xffffffffu, x, 8);
          x += __shfl_xor_sync(0xffffffffu, x, 16);
          if (g == 0) red_p[w * NR + 8 * j + 2 * qd + e] = x;
        }
      named_sync(bar_wg, 128);
#pragma unroll
      for (int j = 0; j < NJ; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int n = 8 * j + 2 * qd + e;
          lsum[j][e] = red_p[n] + red_p[NR + n] + red_p[2 * NR + n] + red_p[3 * NR + n];
        }
      if constexpr (ALT) {
        // Warpgroup 1 hands (m, l, o) over; warpgroup 0 merges them into its own and writes. The
        // buffer is next written at the following request's end, after the request-start barrier
        // that warpgroup 0 reaches only once it has read it here. Where it lies in the Q tile
        // (FP8), a first barrier waits for both warpgroups' last Q·Kᵀ of this request, and o
        // crosses in kXRounds parts, each written, then merged, between two barriers.
        constexpr int R = S::kXRounds, MR = 8 / R;  // column blocks per round
        float* xo = reinterpret_cast<float*>(smem + S::kX);
        float* xm = xo + MR * NS * 128;
        float* xl = xm + NR;
#pragma unroll
        for (int rd = 0; rd < R; ++rd) {
          if (S::kXInQ) named_sync(5, 256);  // rd 0: Q is free; rd > 0: the last part was merged
          if (cw == 1) {
#pragma unroll
            for (int mt = 0; mt < MR; ++mt)
#pragma unroll
              for (int r = 0; r < NS; ++r) xo[(mt * NS + r) * 128 + wt] = o[rd * MR + mt][r];
            if (rd == 0 && w == 0 && g == 0)
#pragma unroll
              for (int j = 0; j < NJ; ++j)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                  xm[8 * j + 2 * qd + e] = m_st[j][e];
                  xl[8 * j + 2 * qd + e] = lsum[j][e];
                }
          }
          named_sync(5, 256);
          if (cw == 0) {
#pragma unroll
            for (int j = 0; j < NJ; ++j)
#pragma unroll
              for (int e = 0; e < 2; ++e) {
                // The factors are recomputed each round (m_st changes after the last), which
                // keeps 2·NJ·2 registers free for the 32-row o.
                const int n = 8 * j + 2 * qd + e;
                const float m1 = xm[n], mx = fmaxf(m_st[j][e], m1);
                const float mu = mx == -INFINITY ? 0.0f : mx;  // both empty: factors 0, l stays 0
                const float f0 = exp2f(m_st[j][e] - mu), f1 = exp2f(m1 - mu);
                if (rd == 0) lsum[j][e] = lsum[j][e] * f0 + xl[n] * f1;
                if (rd == R - 1) m_st[j][e] = mx;
#pragma unroll
                for (int mt = 0; mt < MR; ++mt)
#pragma unroll
                  for (int i = 0; i < 2; ++i) {
                    const int r = 4 * j + 2 * i + e;
                    o[rd * MR + mt][r] = o[rd * MR + mt][r] * f0 + xo[(mt * NS + r) * 128 + wt] * f1;
                  }
              }
          }
        }
      }
      const int slot = segment_slot(b);
      // Output column of o[mt][4j + 2i + e]: 64·mt + 16w + g + 8i, or (RS) 16·(8w + g) + 2·mt + i.
      const int od0 = RS ? 16 * (8 * w + g) : 16 * w + g;
      auto od = [](int mt, int i) { return RS ? 2 * mt + i : mt * 64 + 8 * i; };
#pragma unroll
      for (int j = 0; j < NJ; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int gr = row0 + rbase + 8 * j + 2 * qd + e;
          if (gr >= a.rows || (ALT && cw == 1)) continue;
          const float l = lsum[j][e];
          const float inv = row_out_factor(l, out_scale);
          const float lse_v = row_lse(m_st[j][e], l);
          const int qi = gr / a.heads, h = gr - qi * a.heads;
          if (slot >= 0) {
            float* dst = a.sched.part_o + (static_cast<int64_t>(slot) * a.rows + gr) * 512 + od0;
            if constexpr (RS) {
              // 16 contiguous columns: four 16-byte stores (scalar stores of permuted columns
              // touched 8× the sectors and cost 6–12 µs a segment end in session 5).
#pragma unroll
              for (int mt = 0; mt < 8; mt += 2)
                *reinterpret_cast<float4*>(dst + 2 * mt) = make_float4(o[mt][4 * j + e] * inv, o[mt][4 * j + 2 + e] * inv,
                                                                     o[mt + 1][4 * j + e] * inv, o[mt + 1][4 * j + 2 + e] * inv);
            } else {
#pragma unroll
              for (int mt = 0; mt < 8; ++mt)
#pragma unroll
                for (int i = 0; i < 2; ++i) dst[od(mt, i)] = o[mt][4 * j + 2 * i + e] * inv;
            }
            if (w == 0 && g == 0) a.sched.part_lse[static_cast<int64_t>(slot) * a.rows + gr] = lse_v;
          } else {
            const int64_t off = b * a.o_s0 + qi * a.o_s1 + h * a.o_s2 + od0;
            if (RS && a.out_vec && !a.out_f32) {
              uint32_t pk[8];
#pragma unroll
              for (int mt = 0; mt < 8; ++mt) pk[mt] = pack_bf16(o[mt][4 * j + e] * inv, o[mt][4 * j + 2 + e] * inv);
              uint4* d16 = reinterpret_cast<uint4*>(static_cast<__nv_bfloat16*>(a.out) + off);
              d16[0] = make_uint4(pk[0], pk[1], pk[2], pk[3]);
              d16[1] = make_uint4(pk[4], pk[5], pk[6], pk[7]);
            } else {
#pragma unroll
              for (int mt = 0; mt < 8; ++mt)
#pragma unroll
                for (int i = 0; i < 2; ++i) store_out(off + od(mt, i), o[mt][4 * j + 2 * i + e] * inv);
            }
            if (w == 0 && g == 0) a.lse[b * a.l_s0 + qi * a.l_s1 + h * a.l_s2] = lse_v;
          }
        }
    }

    advance(cs, lo, hi, sch, B);
    if (cs.b != b) seg_t0 = cs.t;
  }
  if (wt == 0) MLAKV_TRACE_WIDE(1 + cw, kTrEnd);
  merge_in_grid();
#else
  __trap();  // launched only where the launcher found an sm_90a binary
#endif
}

}  // namespace mlakv::cuda::mla
