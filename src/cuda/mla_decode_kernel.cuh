// MLA decode attention kernel (sm_80+ tensor-core path: mma.sync m16n8k16 bf16, fp32 accumulate).
//
// One CTA = one part of the split-KV schedule × one tile of 16 or 32 query rows (rows are
// (query i, head h) pairs: MLA decode is MQA, so every row attends over the same cached latents).
// The part's tiles of 64 tokens stream through shared memory in a cp.async ring that flows across
// request boundaries; 8 warps split each tile:
//   S = Q·Kᵀ   warp w computes the 8 tokens [8w, 8w+8) for all rows over all 576 dims;
//   softmax   row maxima and sums are exchanged through shared memory (two barriers per tile);
//   O += P·V  warp w owns output columns [64w, 64w+64) for all rows (V = the first 512 dims
//             of the same tile, read through ldmatrix.trans: no second load).
// FP8 caches land raw in the ring and are widened to bf16 (exactly: e4m3 ⊂ bf16) in a separate
// shared tile; their scales never touch the bf16 values: the per-tensor scale goes into the softmax
// scale and the output, the fp8_ds_mla tile scales multiply the fp32 partial dot products of their
// 128 dims and the probabilities fed to P·V of their 128 columns.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "device_common.cuh"
#include "mla_decode_common.cuh"
#include "mlakv/format.hpp"

namespace mlakv::cuda::mla {

// ---- primitives (the shared ones: device_common.cuh) ------------------------------------------

using dev::cp_async16;
using dev::cp_async4;
using dev::cp_async_commit;
using dev::cp_async_wait;
using dev::smem_u32;
using dev::cluster_ctarank;
using dev::cluster_map;
using dev::cluster_nctarank;
using dev::cluster_sync;
using dev::fence_mbarrier_init_cluster;
using dev::ld_stream16;
using dev::st_async16;
using dev::tma_load_4d;
using dev::tma_load_4d_multicast;
using dev::tma_prefetch_map;

__device__ __forceinline__ void ldmatrix_x4(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2,
                                                  uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}

__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

/// Two e4m3 bytes -> two bf16 (exact: every e4m3 value, subnormals included, is a bf16 value).
__device__ __forceinline__ uint32_t e4m3x2_to_bf16x2(uint32_t pair) {
  __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(pair & 0xffffu), __NV_E4M3);
  const float2 f = __half22float2(*reinterpret_cast<__half2*>(&h));
  return pack_bf16(f.x, f.y);
}

/// 16-byte chunk `ch` (8 values, as bf16) of query row `gr` (= query index · heads + head) of
/// request b; zero for rows past the last (padding rows are then fully masked).
__device__ __forceinline__ uint4 load_q_chunk(const DecodeArgs& a, int64_t b, int gr, int ch) {
  if (gr >= a.rows) return make_uint4(0, 0, 0, 0);
  const int qi = gr / a.heads, h = gr - qi * a.heads;
  const int64_t off = b * a.q_s0 + qi * a.q_s1 + h * a.q_s2 + ch * 8;
  uint32_t w[4];
  if (!a.q_e4m3) {
    const uint16_t* qp = static_cast<const uint16_t*>(a.q) + off;
    if (a.q_vec) return __ldg(reinterpret_cast<const uint4*>(qp));
#pragma unroll
    for (int e = 0; e < 4; ++e) w[e] = __ldg(qp + 2 * e) | (static_cast<uint32_t>(__ldg(qp + 2 * e + 1)) << 16);
  } else {
    const uint8_t* qp = static_cast<const uint8_t*>(a.q) + off;
#pragma unroll
    for (int e = 0; e < 4; ++e) w[e] = e4m3x2_to_bf16x2(__ldg(qp + 2 * e) | (__ldg(qp + 2 * e + 1) << 8));
  }
  return make_uint4(w[0], w[1], w[2], w[3]);
}

/// Byte offset of 16-byte chunk `c` of row `r` in a [rows][576] bf16 tile. Rows are 1152 bytes
/// (a multiple of 128), so without the XOR the 8 rows an ldmatrix reads would share banks.
__device__ __forceinline__ uint32_t swz(int r, int c) { return static_cast<uint32_t>(r * 1152 + ((c ^ (r & 7)) << 4)); }

// ---- per-format constants ---------------------------------------------------------------------

template <CacheFormat F> struct Fmt;
template <> struct Fmt<CacheFormat::bf16> {
  static constexpr int kTokenBytes = 1152;
  static constexpr bool kWiden = false, kTileScales = false, kTensorScale = false;
};
template <> struct Fmt<CacheFormat::fp8> {
  static constexpr int kTokenBytes = 576;
  static constexpr bool kWiden = true, kTileScales = false, kTensorScale = true;
};
template <> struct Fmt<CacheFormat::fp8_ds_mla> {
  static constexpr int kTokenBytes = 656;
  static constexpr bool kWiden = true, kTileScales = true, kTensorScale = false;
};

/// Shared-memory plan for one (format, rows-per-CTA) instance. The ring holds half tiles (32
/// tokens): with as many slots as fit, 1.5 to 2.5 tiles stay in flight per SM while one is
/// consumed, instead of the single tile a two-stage ring of whole tiles allows.
template <CacheFormat F, int NM> struct Smem {
  static constexpr int kRows = 16 * NM;
  static constexpr int kHalf = kTile / 2;
  static constexpr int kQBytes = kRows * 1152;
  static constexpr int kSlotBytes = kHalf * Fmt<F>::kTokenBytes;
  static constexpr int kWideBytes = Fmt<F>::kWiden ? kTile * 1152 : 0;
  // P rows: 64 probabilities, then the 8 warps' row maxima; 72 floats keep the float2 reads of
  // the P·V fragments conflict-free.
  static constexpr int kPPitch = kTile + 8;
  static constexpr int kPBytes = kRows * kPPitch * 4;
  static constexpr int kRedBytes = kWarps * kRows * 4;  // row sums
  static constexpr int kScaleBytes = Fmt<F>::kTileScales ? kTile * 4 * 4 : 0;
  static constexpr int fixed_bytes() { return kQBytes + kWideBytes + kPBytes + kRedBytes + kScaleBytes; }
  static constexpr int bytes_for(int slots) { return fixed_bytes() + slots * (kSlotBytes + kHalf); }
  static constexpr int slots_fit() {
    int n = 8;
    while (n > 4 && bytes_for(n) > 232448) --n;
    return n;
  }
  static constexpr int kSlots = slots_fit();
  static constexpr int kBytes = bytes_for(kSlots);
  static_assert(bytes_for(4) <= 232448, "shared memory plan does not fit");
};

// ---- the kernel -------------------------------------------------------------------------------

/// A segment cursor: request b, tiles [t, t_end) of it inside this part's cost range [lo, hi).
struct Cursor {
  int b, t, t_end;
};

/// Reads the schedule tables of the grid before (the schedule kernel's, in global memory).
struct GlobalTab {
  const Schedule& s;
  __device__ __forceinline__ int prefix(int i) const { return __ldg(s.prefix + i); }
  __device__ __forceinline__ int ntiles(int i) const { return __ldg(s.ntiles + i); }
};

template <class Tab> __device__ __forceinline__ void seek(Cursor& c, int b, int lo, int hi, const Tab& s, int B) {
  for (; b < B; ++b) {
    const int p = s.prefix(b);
    if (p >= hi) break;
    const int n = s.ntiles(b), base = p + kSegmentCost;
    const int t0 = min(max(lo - base, 0), n), t1 = min(max(hi - base, 0), n);
    if (t0 < t1) {
      c = {b, t0, t1};
      return;
    }
  }
  c = {B, 0, 0};
}
template <class Tab> __device__ __forceinline__ void advance(Cursor& c, int lo, int hi, const Tab& s, int B) {
  if (++c.t == c.t_end) seek(c, c.b + 1, lo, hi, s, B);
}
__device__ __forceinline__ void seek(Cursor& c, int b, int lo, int hi, const Schedule& s, int B) {
  seek(c, b, lo, hi, GlobalTab{s}, B);
}
__device__ __forceinline__ void advance(Cursor& c, int lo, int hi, const Schedule& s, int B) {
  advance(c, lo, hi, GlobalTab{s}, B);
}

/// Global position of local token j ≥ 0 of this rank (DCP's interleaved slots). The division is
/// 32-bit unsigned (j and I are ints): a 64-bit division by a runtime divisor is a ~70-instruction
/// call, and every rank's attention kernel runs this for each token it masks.
__device__ __forceinline__ int64_t global_pos(int j, const DecodeArgs& a) {
  if (a.world == 1) return j;
  const uint32_t I = static_cast<uint32_t>(a.interleave), q = static_cast<uint32_t>(j) / I;
  const uint32_t r = static_cast<uint32_t>(j) - q * I;
  return static_cast<int64_t>(q) * (static_cast<int64_t>(I) * a.world) + static_cast<int64_t>(a.rank) * I + r;
}

template <CacheFormat F, int NM>
__global__ void __launch_bounds__(kThreads, 1) mla_decode_kernel(const __grid_constant__ DecodeArgs a) {
  using S = Smem<F, NM>;
  using T = Fmt<F>;
  constexpr int kRows = S::kRows, kSlots = S::kSlots, kHalf = S::kHalf;
  extern __shared__ __align__(128) uint8_t smem[];
  uint8_t* q_s = smem;
  uint8_t* wide_s = q_s + S::kQBytes;
  float* p_s = reinterpret_cast<float*>(wide_s + S::kWideBytes);
  float* red_max = p_s + kTile;  // row r, warp w at red_max[r * kPPitch + w]
  float* red_sum = p_s + kRows * S::kPPitch;
  float* tscale = red_sum + kWarps * kRows;  // [64 tokens][4], fp8_ds_mla only
  uint8_t* ring = reinterpret_cast<uint8_t*>(tscale) + S::kScaleBytes;
  uint8_t* tok_ok = ring + kSlots * S::kSlotBytes;  // [slot][32]: 0 = masked (past the end, bad block)

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, qd = lane & 3;
  pdl_wait();  // the schedule is written by the grid before this one
  pdl_launch_dependents();
  const Schedule& sch = a.sched;
  const int B = a.batch;
  const int payload = __ldg(sch.header), total = __ldg(sch.header + 1);
  const int part = blockIdx.x, row0 = blockIdx.y * kRows;
  const int lo = part * payload;
  if (lo >= total) return;
  const int hi = min(lo + payload, total);

  // First request whose cost range reaches lo: the last b with prefix[b] <= lo.
  int first_b;
  {
    int l = 0, h = B;  // prefix[l] <= lo < prefix[h] (prefix[B] = total > lo)
    while (h - l > 1) {
      const int m = (l + h) >> 1;
      if (__ldg(sch.prefix + m) <= lo) l = m;
      else h = m;
    }
    first_b = l;
  }

  float sc = a.scale_log2, out_scale = 1.0f;
  if (a.q_e4m3) sc *= __ldg(a.q_scale);
  if constexpr (T::kTensorScale) {
    const float ks = __ldg(a.k_scale);
    sc *= ks;
    out_scale = ks;
  }

  // ---- loader: half tiles (units) of 32 tokens, 8 threads per token, chunk c ≡ tid (mod 8) ----
  const uint8_t* cache = a.cache;
  auto load_unit = [&](const Cursor& c, int half, int slot) {
    const int tok = tid >> 3, sub = tid & 7;
    const int j = c.t * kTile + half * kHalf + tok;
    bool ok = j < __ldg(sch.len_local + c.b);
    const uint8_t* src = cache;
    if (ok) {
      const int jb = j / a.block_size;
      ok = jb < a.max_blocks;
      if (ok) {
        const int64_t blk = __ldg(a.block_table + c.b * a.bt_s0 + jb * a.bt_s1);
        ok = blk >= 0 && blk < a.num_blocks;
        if (ok) src = cache + blk * a.block_stride + static_cast<int64_t>(j - jb * a.block_size) * T::kTokenBytes;
      }
    }
    const int nbytes = ok ? 16 : 0;
    uint8_t* st = ring + slot * S::kSlotBytes;
    constexpr int kChunks = T::kTokenBytes / 16;
#pragma unroll
    for (int k = 0; k < (kChunks + 7) / 8; ++k) {
      const int ch = sub + 8 * k;
      if (ch < kChunks) {
        const uint32_t dst = T::kWiden ? smem_u32(st + tok * T::kTokenBytes + ch * 16) : smem_u32(st) + swz(tok, ch);
        cp_async16(dst, ok ? src + ch * 16 : cache, nbytes);
      }
    }
    if (sub == 0) tok_ok[slot * kHalf + tok] = ok;
  };

  // Unit u = 2·(tile index in this part) + half lives in slot u % kSlots. Units 2k, 2k+1 are
  // consumed in iteration k while units up to 2k + kSlots − 1 are in flight.
  Cursor ld, cs;
  seek(ld, first_b, lo, hi, sch, B);
  cs = ld;
  int ld_half = 0, ld_unit = 0;
  auto issue_unit = [&]() {
    if (ld.b < B) {
      load_unit(ld, ld_half, ld_unit % kSlots);
      if (ld_half == 1) advance(ld, lo, hi, sch, B);
      ld_half ^= 1;
    }
    ++ld_unit;
    cp_async_commit();  // one group per unit, empty past the end, so the wait counts stay fixed
  };
#pragma unroll
  for (int u = 0; u < kSlots - 2; ++u) issue_unit();

  // Per-thread rows: fragment mf, half hr -> tile row mf*16 + g + 8*hr.
  float o[NM][8][4];
  float m_st[NM][2], l_st[NM][2];
  int64_t lim[NM][2];  // a row sees global positions < lim
  int seg_t0 = cs.t;   // first tile of the current segment

  for (int k = 0; cs.b < B; ++k) {
    cp_async_wait<kSlots - 4>();
    __syncthreads();  // units 2k, 2k+1 landed for every thread; everyone is done with tile k-1
    issue_unit();
    issue_unit();

    const int slot0 = (2 * k) % kSlots, slot1 = (2 * k + 1) % kSlots;
    const uint32_t ring_u = smem_u32(ring);
    // Byte offset of token row t (0..63) of the current tile inside the ring's slots.
    auto half_base = [&](int half) { return static_cast<uint32_t>((half ? slot1 : slot0) * S::kSlotBytes); };
    const int b = cs.b;
    const bool seg_first = cs.t == seg_t0;
    const int len = __ldg(sch.len_local + b);
    if (seg_first) {
      // Q rows of this request; rows past s_q·H are zero and fully masked.
      const int L = __ldg(a.seq_lens + b * a.sl_s0);
      for (int idx = tid; idx < kRows * 72; idx += kThreads) {
        const int r = idx / 72, ch = idx - r * 72, gr = row0 + r;
        const uint4 v = load_q_chunk(a, b, gr, ch);
        *reinterpret_cast<uint4*>(q_s + swz(r, ch)) = v;
      }
#pragma unroll
      for (int mf = 0; mf < NM; ++mf) {
#pragma unroll
        for (int hr = 0; hr < 2; ++hr) {
          const int gr = row0 + mf * 16 + g + 8 * hr;
          const int qi = gr / a.heads;
          lim[mf][hr] = gr >= a.rows ? INT64_MIN : a.causal ? static_cast<int64_t>(L) - a.s_q + qi + 1 : INT64_MAX;
          m_st[mf][hr] = -INFINITY;
          l_st[mf][hr] = 0.0f;
        }
#pragma unroll
        for (int nf = 0; nf < 8; ++nf) o[mf][nf][0] = o[mf][nf][1] = o[mf][nf][2] = o[mf][nf][3] = 0.0f;
      }
    }

    if constexpr (T::kWiden) {
      // Widen the raw tile to bf16; 72 chunks of 8 values per token.
      for (int idx = tid; idx < kTile * 72; idx += kThreads) {
        const int tok = idx / 72, ch = idx - tok * 72;
        const uint8_t* src = ring + half_base(tok >= kHalf) + (tok & (kHalf - 1)) * T::kTokenBytes;
        uint4 v;
        if (T::kTileScales && ch >= 64) {
          v = *reinterpret_cast<const uint4*>(src + 528 + (ch - 64) * 16);  // bf16 rope, as is
        } else {
          const uint2 e = *reinterpret_cast<const uint2*>(src + ch * 8);
          v.x = e4m3x2_to_bf16x2(e.x);
          v.y = e4m3x2_to_bf16x2(e.x >> 16);
          v.z = e4m3x2_to_bf16x2(e.y);
          v.w = e4m3x2_to_bf16x2(e.y >> 16);
        }
        *reinterpret_cast<uint4*>(wide_s + swz(tok, ch)) = v;
      }
      if constexpr (T::kTileScales) {
        const int tok = tid >> 2;
        tscale[tid] = *reinterpret_cast<const float*>(ring + half_base(tok >= kHalf) + (tok & (kHalf - 1)) * T::kTokenBytes +
                                                      512 + (tid & 3) * 4);
      }
    }
    if (T::kWiden || seg_first) __syncthreads();
    // Where token rows live: the widened tile (rows 0..63), or the two ring slots (rows 0..31 each).
    auto kv_row = [&](int t) -> uint32_t {
      if constexpr (T::kWiden) return smem_u32(wide_s) + static_cast<uint32_t>((t >> 5) * kHalf * 1152);
      else return ring_u + half_base(t >= kHalf);
    };

    // ---- S = Q·Kᵀ for tokens [8w, 8w+8) ----
    // Consecutive k-steps go to different accumulators: a single chain of 36 dependent mma would
    // put their full latency on every tile's critical path.
    const uint32_t q_u = smem_u32(q_s);
    const int k_row = warp * 8 + (lane & 7);
    const uint32_t k_base = kv_row(k_row) + static_cast<uint32_t>((k_row & (kHalf - 1)) * 1152);
    const int k_xor = k_row & 7;
    float s[NM][4];
    auto zero = [](float(&x)[NM][4]) {
#pragma unroll
      for (int mf = 0; mf < NM; ++mf) x[mf][0] = x[mf][1] = x[mf][2] = x[mf][3] = 0.0f;
    };
    auto qk_step = [&](float(&acc)[NM][4], int ks, uint32_t b0, uint32_t b1) {
#pragma unroll
      for (int mf = 0; mf < NM; ++mf) {
        uint32_t aq[4];
        ldmatrix_x4(q_u + swz(mf * 16 + (lane & 15), ks * 2 + (lane >> 4)), aq[0], aq[1], aq[2], aq[3]);
        mma_bf16(acc[mf], aq, b0, b1);
      }
    };
    auto k_frag = [&](int kk, uint32_t(&bk)[4]) {
      ldmatrix_x4(k_base + (((kk * 4 + (lane >> 3)) ^ k_xor) << 4), bk[0], bk[1], bk[2], bk[3]);
    };
    const int tk = warp * 8 + 2 * qd;  // this thread's two tokens: tk, tk + 1
    if constexpr (T::kTileScales) {
      zero(s);
#pragma unroll
      for (int grp = 0; grp < 4; ++grp) {
        float sg0[NM][4], sg1[NM][4];
        zero(sg0);
        zero(sg1);
#pragma unroll
        for (int kk = grp * 4; kk < grp * 4 + 4; ++kk) {
          uint32_t bk[4];
          k_frag(kk, bk);
          qk_step(sg0, 2 * kk, bk[0], bk[1]);
          qk_step(sg1, 2 * kk + 1, bk[2], bk[3]);
        }
        const float c0 = tscale[tk * 4 + grp], c1 = tscale[(tk + 1) * 4 + grp];
#pragma unroll
        for (int mf = 0; mf < NM; ++mf) {
          s[mf][0] += c0 * (sg0[mf][0] + sg1[mf][0]);
          s[mf][1] += c1 * (sg0[mf][1] + sg1[mf][1]);
          s[mf][2] += c0 * (sg0[mf][2] + sg1[mf][2]);
          s[mf][3] += c1 * (sg0[mf][3] + sg1[mf][3]);
        }
      }
      float r0[NM][4], r1[NM][4];  // bf16 rope, unscaled
      zero(r0);
      zero(r1);
#pragma unroll
      for (int kk = 16; kk < 18; ++kk) {
        uint32_t bk[4];
        k_frag(kk, bk);
        qk_step(r0, 2 * kk, bk[0], bk[1]);
        qk_step(r1, 2 * kk + 1, bk[2], bk[3]);
      }
#pragma unroll
      for (int mf = 0; mf < NM; ++mf)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[mf][e] += r0[mf][e] + r1[mf][e];
    } else {
      float c[4][NM][4];
#pragma unroll
      for (int i = 0; i < 4; ++i) zero(c[i]);
#pragma unroll
      for (int kk = 0; kk < 18; ++kk) {
        uint32_t bk[4];
        k_frag(kk, bk);
        qk_step(c[(2 * kk) & 3], 2 * kk, bk[0], bk[1]);
        qk_step(c[(2 * kk + 1) & 3], 2 * kk + 1, bk[2], bk[3]);
      }
#pragma unroll
      for (int mf = 0; mf < NM; ++mf)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[mf][e] = (c[0][mf][e] + c[1][mf][e]) + (c[2][mf][e] + c[3][mf][e]);
    }

    // ---- mask, scale, tile row maxima ----
    const int j0 = cs.t * kTile + tk;
    const uint8_t* okp = tok_ok + (tk >= kHalf ? slot1 : slot0) * kHalf + (tk & (kHalf - 1));
    const bool ok0 = j0 < len && okp[0], ok1 = j0 + 1 < len && okp[1];
    const int64_t p0 = global_pos(j0, a), p1 = global_pos(j0 + 1, a);
#pragma unroll
    for (int mf = 0; mf < NM; ++mf) {
#pragma unroll
      for (int hr = 0; hr < 2; ++hr) {
        float& x0 = s[mf][2 * hr];
        float& x1 = s[mf][2 * hr + 1];
        x0 = ok0 && p0 < lim[mf][hr] ? x0 * sc : -INFINITY;
        x1 = ok1 && p1 < lim[mf][hr] ? x1 * sc : -INFINITY;
        float mx = fmaxf(x0, x1);
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        if (qd == 0) red_max[(mf * 16 + g + 8 * hr) * S::kPPitch + warp] = mx;
      }
    }
    __syncthreads();

    // ---- probabilities (fp32, to shared), row sums ----
    float alpha[NM][2];
#pragma unroll
    for (int mf = 0; mf < NM; ++mf) {
#pragma unroll
      for (int hr = 0; hr < 2; ++hr) {
        const int r = mf * 16 + g + 8 * hr;
        float mn = m_st[mf][hr];
#pragma unroll
        for (int w = 0; w < kWarps; ++w) mn = fmaxf(mn, red_max[r * S::kPPitch + w]);
        const float mu = mn == -INFINITY ? 0.0f : mn;  // fully masked so far: keep exp2 finite
        alpha[mf][hr] = exp2f(m_st[mf][hr] - mu);
        m_st[mf][hr] = mn;
        const float e0 = exp2f(s[mf][2 * hr] - mu), e1 = exp2f(s[mf][2 * hr + 1] - mu);
        *reinterpret_cast<float2*>(p_s + r * S::kPPitch + tk) = make_float2(e0, e1);
        float sum = e0 + e1;
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        if (qd == 0) red_sum[warp * kRows + r] = sum;
      }
    }
    __syncthreads();

#pragma unroll
    for (int mf = 0; mf < NM; ++mf) {
#pragma unroll
      for (int hr = 0; hr < 2; ++hr) {
        const int r = mf * 16 + g + 8 * hr;
        float sum = 0.0f;
#pragma unroll
        for (int w = 0; w < kWarps; ++w) sum += red_sum[w * kRows + r];
        l_st[mf][hr] = l_st[mf][hr] * alpha[mf][hr] + sum;
#pragma unroll
        for (int nf = 0; nf < 8; ++nf) {
          o[mf][nf][2 * hr] *= alpha[mf][hr];
          o[mf][nf][2 * hr + 1] *= alpha[mf][hr];
        }
      }
    }

    // ---- O[:, 64w : 64w+64] += P · V ----
#pragma unroll
    for (int ks = 0; ks < kTile / 16; ++ks) {
      uint32_t ap[NM][4];
      const int c = ks * 16 + 2 * qd;
      float v0 = 1.0f, v1 = 1.0f, v8 = 1.0f, v9 = 1.0f;
      if constexpr (T::kTileScales) {
        const int grp = warp >> 1;  // columns [64w, 64w+64) lie in tile-scale group w/2
        v0 = tscale[c * 4 + grp];
        v1 = tscale[(c + 1) * 4 + grp];
        v8 = tscale[(c + 8) * 4 + grp];
        v9 = tscale[(c + 9) * 4 + grp];
      }
#pragma unroll
      for (int mf = 0; mf < NM; ++mf) {
        const float* pr0 = p_s + (mf * 16 + g) * S::kPPitch + c;
        const float* pr1 = pr0 + 8 * S::kPPitch;
        const float2 x0 = *reinterpret_cast<const float2*>(pr0);
        const float2 x1 = *reinterpret_cast<const float2*>(pr1);
        const float2 x2 = *reinterpret_cast<const float2*>(pr0 + 8);
        const float2 x3 = *reinterpret_cast<const float2*>(pr1 + 8);
        ap[mf][0] = pack_bf16(x0.x * v0, x0.y * v1);
        ap[mf][1] = pack_bf16(x1.x * v0, x1.y * v1);
        ap[mf][2] = pack_bf16(x2.x * v8, x2.y * v9);
        ap[mf][3] = pack_bf16(x3.x * v8, x3.y * v9);
      }
      const int v_row = ks * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;  // ks < 2: first half tile
      const uint32_t v_base = kv_row(ks * 16) + static_cast<uint32_t>((v_row & (kHalf - 1)) * 1152);
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        uint32_t bv[4];
        ldmatrix_x4_trans(v_base + (((warp * 8 + np * 2 + (lane >> 4)) ^ (v_row & 7)) << 4), bv[0], bv[1], bv[2], bv[3]);
#pragma unroll
        for (int mf = 0; mf < NM; ++mf) {
          mma_bf16(o[mf][2 * np], ap[mf], bv[0], bv[1]);
          mma_bf16(o[mf][2 * np + 1], ap[mf], bv[2], bv[3]);
        }
      }
    }

    // ---- end of segment: normalized output, or a partial for the combine kernel ----
    if (cs.t + 1 == cs.t_end) {
      const int sb = __ldg(sch.split_base + b);
      int slot = -1;
      if (sb >= 0) slot = sb + part - (__ldg(sch.prefix + b) + kSegmentCost) / payload;
#pragma unroll
      for (int mf = 0; mf < NM; ++mf) {
#pragma unroll
        for (int hr = 0; hr < 2; ++hr) {
          const int gr = row0 + mf * 16 + g + 8 * hr;
          if (gr >= a.rows) continue;
          const float l = l_st[mf][hr];
          const float inv = row_out_factor(l, out_scale);
          const float lse_v = row_lse(m_st[mf][hr], l);
          const int col0 = warp * 64 + 2 * qd;
          if (slot >= 0) {
            float* dst = sch.part_o + (static_cast<int64_t>(slot) * a.rows + gr) * 512 + col0;
#pragma unroll
            for (int nf = 0; nf < 8; ++nf)
              *reinterpret_cast<float2*>(dst + nf * 8) = make_float2(o[mf][nf][2 * hr] * inv, o[mf][nf][2 * hr + 1] * inv);
            if (warp == 0 && qd == 0) sch.part_lse[static_cast<int64_t>(slot) * a.rows + gr] = lse_v;
          } else {
            const int qi = gr / a.heads, h = gr - qi * a.heads;
            const int64_t off = b * a.o_s0 + qi * a.o_s1 + h * a.o_s2 + col0;
#pragma unroll
            for (int nf = 0; nf < 8; ++nf) {
              const float y0 = o[mf][nf][2 * hr] * inv, y1 = o[mf][nf][2 * hr + 1] * inv;
              if (a.out_f32) {
                float* d = static_cast<float*>(a.out) + off + nf * 8;
                if (a.out_vec) *reinterpret_cast<float2*>(d) = make_float2(y0, y1);
                else d[0] = y0, d[1] = y1;
              } else {
                __nv_bfloat16* d = static_cast<__nv_bfloat16*>(a.out) + off + nf * 8;
                if (a.out_vec) *reinterpret_cast<uint32_t*>(d) = pack_bf16(y0, y1);
                else d[0] = __float2bfloat16_rn(y0), d[1] = __float2bfloat16_rn(y1);
              }
            }
            if (warp == 0 && qd == 0) a.lse[b * a.l_s0 + qi * a.l_s1 + h * a.l_s2] = lse_v;
          }
        }
      }
    }

    advance(cs, lo, hi, sch, B);
    if (cs.b != b) seg_t0 = cs.t;  // a new request starts here: reload Q, reset the state
  }
  cp_async_wait<0>();
}

}  // namespace mlakv::cuda::mla
