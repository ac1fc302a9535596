// The lock-step rows-as-M form of the sm90 decode kernel: bf16 cache, 64 query rows per CTA,
// two warpgroups and no producer (MLAKV_DECODE_FORM=ls while it is measured against the seesaw).
//
// The seesaw (mla_decode_sm90.cuh, RM) runs each tile's chain — owner's Q·Kᵀ → softmax →
// publication → the other's P·V → release → the producer's refill → landing — with one stage
// per warpgroup, and the two warpgroups free-running against each other: about 8,700 clocks a
// pair of tiles against ~4,400 of tensor work (docs/perf/decode-notes.md, session 23). Here the
// two warpgroups step through pairs of tiles together, as FlashMLA's dense sm90 decode does:
//   - buffer K0 holds the pair's first tile A, K1 its second B; warpgroup 0 computes S = Q·Kᵀ
//     of A, warpgroup 1 of B (all 64 rows as wgmma's M, m64n64k16);
//   - one running maximum per row in shared memory, updated in turn: warpgroup 0's softmax of A
//     (factor f0 for the old maxima), then warpgroup 1's of B from those (factor f1); warpgroup
//     0 stores its P already scaled by f1, so both P's and both output halves share one reference;
//   - warpgroup w owns output columns [256w, 256w + 256): its own P·V from registers, the
//     other's P from shared memory (m64n256k16);
//   - each half of a buffer (column blocks 0–3, 4–8) is refilled by TMA with the next pair's
//     tile by its last reader, after its P·V there: warpgroup 0 blocks 0–3, warpgroup 1 blocks
//     4–8 (one box and one barrier per half; block sizes 16 and 32: a box and a barrier per
//     column block);
//   - the next pair's Q·Kᵀ runs in two parts, the half refilled first first (warpgroup 0: 0–3
//     then 4–8; warpgroup 1: 4–8 then 0–3), each part waiting only for its own blocks.
// Q's rope block lives in registers (A operands of four m64n64k16 RS steps, loaded from global
// memory), so that P1's buffer fits beside the latent Q (shared memory: two 72 KB buffers, 64 KB
// of Q, two P).
// A request's last partial tile: its tokens past the end are zeroed in V's rows before the P·V
// that reads them (TMA brings whatever the block holds there, and 0 · NaN is NaN).
#pragma once

#include "mla_decode_sm90.cuh"

namespace mlakv::cuda::mla {

inline constexpr int kLsThreads = 256;

struct LsSmem {
  static constexpr int kBlock = 8192;                    // 64 columns × 64 tokens (or rows), bf16
  static constexpr int kQ = 2 * kStageBytes;             // after K0, K1: Q's 8 latent column blocks
  static constexpr int kP1 = kQ + 8 * kBlock;            // P1 [64 rows][64 tokens], K-major like Q
  static constexpr int kP0 = kP1 + kBlock;
  static constexpr int kM = kP0 + kBlock;                // [64] running row maxima (log2 units)
  static constexpr int kF0 = kM + 256, kF1 = kF0 + 256;  // [64] each: a tile's factor for the old maxima
  static constexpr int kL = kF1 + 256;                   // [2][64] row sums at a segment's end
  static constexpr int kOk = kL + 512;                   // [2][64] token-valid flags of each buffer
  static constexpr int kBar = kOk + 128;                 // [2][9] TMA barriers (a half's: its first block's)
  static constexpr int kBox = kBar + 2 * 9 * 8;          // [2 issuers][2 tiles] the next pair's boxes
  static constexpr int kSch = kBox + 2 * 2 * 8 * 4;      // fused path: the CTA's schedule
  static constexpr int kBytes = kSch + FusedTab::kAttnInts * 4;
  static_assert(kBytes <= 232448, "lock-step shared-memory plan does not fit");
  static_assert(kQ % 1024 == 0 && kP1 % 1024 == 0 && kP0 % 1024 == 0 && kOk % 16 == 0 && kBar % 8 == 0, "alignment");
};

template <CacheFormat F>
__global__ void __launch_bounds__(kLsThreads, 1) mla_decode_sm90_ls_kernel(const __grid_constant__ DecodeArgs a) {
#if MLAKV_SM90A_DEVICE
  using namespace sm90;
  using S = LsSmem;
  static_assert(F == CacheFormat::bf16, "the lock-step form reads bf16 tiles by TMA");
  constexpr int kRowsCta = 64, kBlock = S::kBlock;
  extern __shared__ __align__(1024) uint8_t smem[];
  const uint32_t base = smem_u32(smem);
  if (base & 1023) __trap();  // the swizzle is on address bits: tiles must sit on 1024-byte lines
  int* const si = reinterpret_cast<int*>(smem + S::kSch);
  const Sm90Tab sch{a, si};
  const int B = a.batch, row0 = blockIdx.y * kRowsCta;
  int lo, hi, first_b;
  if (!part_range<kLsThreads, kRowsCta>(a, si, reinterpret_cast<int*>(smem), lo, hi, first_b)) return;

  // The warpgroup index through a shuffle: ptxas then knows it is warp-uniform, and the two
  // warpgroups' wgmma paths are not divergent code to it.
  const int ct = threadIdx.x, wg = __shfl_sync(0xffffffffu, ct >> 7, 0), wt = ct & 127, w = wt >> 5, lane = wt & 31, g = lane >> 2, qd = lane & 3;
  const bool issuer = wt == 0;
  float* const row_m = reinterpret_cast<float*>(smem + S::kM);
  float* const f0_s = reinterpret_cast<float*>(smem + S::kF0);
  float* const f1_s = reinterpret_cast<float*>(smem + S::kF1);
  float* const row_l = reinterpret_cast<float*>(smem + S::kL);
  uint8_t* const tok_ok = smem + S::kOk;
  // Shared-memory addresses from an opaque base: hoisted out of the loop, the pair's ~100
  // barrier, buffer and descriptor addresses held registers across it and spilled.
  auto opaque = [](uint32_t x) {
    asm volatile("" : "+r"(x));
    return x;
  };
  // Block sizes from 64: a tile comes in two boxes (column blocks 0–3 and 4–8, one UTMALDG each:
  // a box per block cost the issuer ~1,000 clocks a refill), each completing on the barrier of
  // its first block; else a box per block and a barrier each.
  const bool halves = a.kv_box_cblocks == 4;
  auto kbar = [&](int buf, int c) {
    return opaque(base) + S::kBar + 8 * (9 * buf + (halves ? (c < 4 ? 0 : 4) : c));
  };
  auto buf_u = [&](int buf) { return opaque(base) + buf * kStageBytes; };
  // Named barriers (0: __syncthreads; 6: the in-grid merge): 2 + wg each warpgroup,
  // 4 f0 and the maxima published, 5 f1, the maxima and P1, 7 P0 (scaled by f1), 8 row sums.
  constexpr int kBarF0 = 4, kBarF1 = 5, kBarP0 = 7, kBarL = 8;
  const int bar_wg = 2 + wg;
  if (ct == 0) {
    for (int i = 0; i < 18; ++i) mbar_init(base + S::kBar + 8 * i, 1);
    tma_prefetch_map(&a.kv_map);
    if (halves) tma_prefetch_map(&a.kv_map_hi);
  }
  __syncthreads();

  const float sc = a.scale_log2;

  // The pairs of tiles of this part, request by request (a request's odd last tile pairs with an
  // absent B: its S is −inf everywhere and no P·V reads buffer 1).
  auto next_pair = [&](Cursor c) {
    c.t += 2;
    if (c.t >= c.t_end) seek(c, c.b + 1, lo, hi, sch, B);
    return c;
  };
  // The next pair's boxes, looked up by each warpgroup's issuer where it waits for the other and
  // used by the same thread at its refills (in shared memory: registers are the scarce side).
  struct Boxes {
    int blk[4], in_block[4];
  };
  Boxes* const boxes = reinterpret_cast<Boxes*>(smem + S::kBox) + 2 * wg;
  // A tile's boxes of kv_box_rows tokens (one, two or four: 64 / kv_box_rows): the box at quarter
  // q (a multiple of step) covers tokens 16q .. 16(q + step) − 1; its table entry comes by cp.async (a load into a register stalled the
  // issuer's warp, and with it the pair), −1 where masked before the table, checked against the
  // cache when issued. The issuer's work is single-lane and serial: it runs where its warpgroup
  // waits for the other anyway, and kept short (stamps: ~2,000 clocks a refill with per-box
  // divisions and lookups for every quarter).
  const int step = a.kv_box_rows >> 4;  // quarters per box: 1, 2 or 4 (shifts and masks below: a
                                        // division is ~40 single-lane instructions here)
  auto lookup = [&](int b, int t, int len, Boxes& x) {
    const int j0 = t * kTile;
    int64_t jb0;
    int in0;
    dev::split_slot(j0, a.block_size, true, jb0, in0);
    for (int q = 0; q < 4; q += step) {
      const int j = j0 + 16 * q;
      // Block sizes 16 and 32 hold one box each; from 64 on a tile lies in one block.
      const int64_t jb = a.block_size >= kTile ? jb0 : jb0 + (step == 1 ? q : q >> 1);
      x.in_block[q] = a.block_size >= kTile ? in0 + 16 * q : 0;
      if (j < len && jb < a.max_blocks) cp_async4(smem_u32(&x.blk[q]), a.block_table + b * a.bt_s0 + jb * a.bt_s1, 4);
      else x.blk[q] = -1;
    }
    cp_async_commit();
  };
  // Column blocks [c0, c1) of a tile into buffer buf, by one thread: masked boxes as boxes past
  // the map's end (they land as zeros, unread). An absent tile arrives without bytes, so that
  // every block barrier completes one phase per pair. Warpgroup 0 also writes the tile's token
  // flags (before its arrivals, which release them).
  auto issue = [&](int buf, int c0, int c1, bool present, const Boxes& x) {
    cp_async_wait<0>();  // the table entries (this thread's copies)
    // Box q's block, or the map's end (masked); read from shared memory each time (an array of
    // them went to local memory, whose loads missed the small L1 beside 226 KB of tiles).
    auto block_of = [&](int q) {
      const int v = x.blk[q];
      return v < 0 || v >= a.num_blocks ? static_cast<int>(a.num_blocks) : v;
    };
    if (present && c0 == 0) {
      uint4* f = reinterpret_cast<uint4*>(tok_ok + 64 * buf);
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const uint32_t v = block_of(q & ~(step - 1)) < a.num_blocks ? 0x01010101u : 0u;
        f[q] = make_uint4(v, v, v, v);
      }
    }
    if (halves) {
      const uint32_t bar = kbar(buf, c0);
      if (!present) mbar_arrive(bar);
      else {
        mbar_arrive_expect_tx(bar, (c1 - c0) * kBlock);
        tma_load_4d(buf_u(buf) + c0 * kBlock, c0 == 0 ? &a.kv_map : &a.kv_map_hi, bar, 0, x.in_block[0], c0, block_of(0));
      }
      return;
    }
    for (int c = c0; c < c1; ++c) {
      const uint32_t bar = kbar(buf, c);
      if (!present) {
        mbar_arrive(bar);
        continue;
      }
      mbar_arrive_expect_tx(bar, kBlock);
      for (int q = 0; q < 4; q += step)
        tma_load_4d(buf_u(buf) + c * kBlock + q * 2048, &a.kv_map, bar, 0, x.in_block[q], c, block_of(q));
    }
  };
  auto wait_blocks = [&](int buf, int c0, int c1, int parity) {
    for (int c = c0; c < c1; ++c) mbar_wait(kbar(buf, c), parity);
  };
  // Tokens [n, 64) of a partial tile, zeroed in this warpgroup's four V column blocks of buffer
  // buf once they landed, visible to the warpgroup's wgmma after.
  auto zero_tail = [&](int buf, int n, int parity) {
    const int c0 = 4 * wg, per = (kTile - n) * 8;  // 16-byte chunks per column block
    wait_blocks(buf, c0, c0 + 4, parity);
    uint4* t = reinterpret_cast<uint4*>(smem + buf * kStageBytes);
    for (int i = wt; i < 4 * per; i += 128) {
      const int c = c0 + i / per, k = i - (i / per) * per;
      t[(c * kBlock + n * 128) / 16 + k] = make_uint4(0, 0, 0, 0);
    }
    fence_async_smem();
    named_sync(bar_wg, 128);
  };

  float o[4][32];   // this warpgroup's 256 output columns, column block cb: an m64n64 fragment
  float s[32];      // S of this warpgroup's tile of the pair, then its P (fp32)
  uint32_t pa[4][4];  // own P as bf16 A fragments
  uint32_t qr[4][4];  // Q's rope block as A fragments
  float l_run[2];
  int lim[2];
  auto rescale = [&](int i, float alpha) { rm_rescale(o, i, alpha); };
  // Q·Kᵀ over column blocks [c0, c1) of buffer buf (and the rope block from registers), each
  // block issued as soon as it landed; `first`: the chain starts here (S from zero).
  auto qk = [&](int buf, int c0, int c1, bool rope, bool first, int parity) {
    // No zeroing of S for a chain's start (its first wgmma ignores S): ptxas cannot tell that no
    // Q·Kᵀ is in flight there on every path, and waits for one (serializing every wgmma).
    for (int c = c0; c < c1; ++c) {
      mbar_wait(kbar(buf, c), parity);
      const uint64_t q_desc = desc_sw128(opaque(base + S::kQ + c * kBlock), 16, 1024);
      const uint64_t k_desc = desc_sw128(opaque(buf_u(buf) + c * kBlock), 16, 1024);
      wg_fence();  // after each wait: no branch between a fence and its wgmma
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
        MmaSS64<>::run(s, desc_plus(q_desc, kk * 32), desc_plus(k_desc, kk * 32), first && c == c0 && kk == 0 ? 0 : 1);
    }
    if (rope) {
      mbar_wait(kbar(buf, 8), parity);
      const uint64_t k_desc = desc_sw128(opaque(buf_u(buf) + 8 * kBlock), 16, 1024);
      wg_fence();
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) MmaRS64::run(s, qr[kk], desc_plus(k_desc, kk * 32), 1);
    }
    wg_commit();
  };
  // o += P · V over this warpgroup's columns of buffer buf: P from registers (own) or from the
  // K-major buffer at p_u (the other's).
  auto pv_regs = [&](int buf) {
#pragma unroll
    for (int cb = 0; cb < 4; ++cb) pin(o[cb]);
    const uint64_t v_desc = desc_sw128(opaque(buf_u(buf) + wg * 4 * kBlock), kBlock, 1024);
    wg_fence();
#pragma unroll
    for (int c = 0; c < 4; ++c) MmaRS256<>::run(*reinterpret_cast<float(*)[128]>(&o[0][0]), pa[c], desc_plus(v_desc, c * 2048));
    wg_commit();
  };
  auto pv_smem = [&](int buf, uint32_t p_u) {
#pragma unroll
    for (int cb = 0; cb < 4; ++cb) pin(o[cb]);
    const uint64_t v_desc = desc_sw128(opaque(buf_u(buf) + wg * 4 * kBlock), kBlock, 1024);
    const uint64_t p_desc = desc_sw128(opaque(p_u), 16, 1024);
    wg_fence();
#pragma unroll
    for (int c = 0; c < 4; ++c)
      MmaSS256::run(*reinterpret_cast<float(*)[128]>(&o[0][0]), desc_plus(p_desc, c * 32), desc_plus(v_desc, c * 2048));
    wg_commit();
  };
  // After a wait for P · V: o and P's registers are the compiler's again (not S: a Q·Kᵀ may
  // still be in flight, and a touch would make ptxas wait for it).
  auto settle = [&](bool own_p) {
#pragma unroll
    for (int cb = 0; cb < 4; ++cb) pin(o[cb]);
    if (own_p)  // the registers it read stay live until here (not later: they would crowd the next Q·Kᵀ)
#pragma unroll
      for (int c = 0; c < 4; ++c) asm volatile("" : "+r"(pa[c][0]), "+r"(pa[c][1]), "+r"(pa[c][2]), "+r"(pa[c][3])::"memory");
  };
  // A request's Q (bf16, rows 16-byte aligned: mla_decode.cu): the latent columns into shared
  // memory by cp.async (no registers: the load overlaps a pair whose S and o are live), 16
  // chunks a thread, rows past the last as zeros; the rope straight into registers. Once no
  // Q·Kᵀ of the previous request is in flight; every thread waits for its copies and fences them
  // before a barrier that precedes the next Q·Kᵀ.
  auto load_q = [&](int b) {
    const int t = static_cast<int>(opaque(ct));  // (its addresses recomputed, not held across the loop)
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      const int idx = t + 256 * i, r = idx >> 6, ch = idx & 63, gr = row0 + r;
      const int qi = gr / a.heads, h = gr - qi * a.heads;
      const uint16_t* src = static_cast<const uint16_t*>(a.q) + b * a.q_s0 + qi * a.q_s1 + h * a.q_s2 + ch * 8;
      cp_async16(smem_u32(q_chunk_at<kRowsCta>(smem + S::kQ, r, ch)), gr < a.rows ? src : a.q, gr < a.rows ? 16 : 0);
    }
    cp_async_commit();
#pragma unroll
    for (int c = 0; c < 4; ++c)
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int gr = row0 + 16 * w + g + 8 * (r & 1), qi = gr / a.heads, h = gr - qi * a.heads;
        const uint16_t* src = static_cast<const uint16_t*>(a.q) + b * a.q_s0 + qi * a.q_s1 + h * a.q_s2 + kLatentDim +
                              16 * c + 8 * (r >> 1) + 2 * qd;
        qr[c][r] = gr < a.rows ? __ldg(reinterpret_cast<const uint32_t*>(src)) : 0u;
      }
  };
  // A request's fresh state (o, l, its rows' causal limits).
  auto start_segment = [&](int b) {
    const int L = __ldg(a.seq_lens + b * a.sl_s0);
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      lim[i] = row_limit(a, row0 + 16 * w + g + 8 * i, L);
      l_run[i] = 0.0f;
    }
#pragma unroll
    for (int cb = 0; cb < 4; ++cb)
#pragma unroll
      for (int r = 0; r < 32; ++r) o[cb][r] = 0.0f;
  };
  // The next pair's Q·Kᵀ: warpgroup 0 on A (blocks 0–3, then 4–8), warpgroup 1 on B (4–8, then
  // 0–3). Issued on every path, so that ptxas sees one S chain (issued in branches, it waited
  // for S in flight at their joins and serialized every wgmma): where B is absent it runs on
  // whatever buffer 1 holds (never read), and after a part's last pair once more on the landed
  // buffers.
  auto qk_first_part = [&](int parity) {
    if (wg == 0) qk(0, 0, 4, false, true, parity);
    else qk(1, 4, 8, true, true, parity);
  };
  auto qk_second_part = [&](int parity) {
    if (wg == 0) qk(0, 4, 8, true, false, parity);
    else qk(1, 0, 4, false, false, parity);
  };

  Cursor cur;
  seek(cur, first_b, lo, hi, sch, B);
  PartSlots slots;
  const int part = blockIdx.x, payload = sch.header(0);
  {
    const bool has_b = cur.t + 1 < cur.t_end;
    if (issuer) {
      const int len = sch.len_local(cur.b);
      lookup(cur.b, cur.t, len, boxes[0]);
      if (has_b) lookup(cur.b, cur.t + 1, len, boxes[1]);
      issue(0, 4 * wg, wg == 0 ? 4 : 9, true, boxes[0]);
      issue(1, 4 * wg, wg == 0 ? 4 : 9, has_b, boxes[1]);
    }
    load_q(cur.b);
    start_segment(cur.b);
    cp_async_wait<0>();
    fence_async_smem();
    __syncthreads();
    qk_first_part(0);
    qk_second_part(0);
    wg_wait0();
    pin(s);
  }
  bool seg_first = true;
  int len = sch.len_local(cur.b);  // the request's, reloaded at a segment's end
  for (int k = 0; cur.b < B; ++k) {
    MLAKV_TRACE(1 + wg, k, 0);
    const int b = cur.b, par = k & 1;
    const Cursor nxt = next_pair(cur);
    const bool has_b = cur.t + 1 < cur.t_end, last = nxt.b != b, more = nxt.b < B;
    const bool nxt_has_b = more && nxt.t + 1 < nxt.t_end;
    const int len_next = last && more ? sch.len_local(nxt.b) : len;
    const int n_a = min(kTile, len - cur.t * kTile), n_b = has_b ? min(kTile, len - (cur.t + 1) * kTile) : kTile;
    const int par_next = more ? par ^ 1 : par;  // the next Q·Kᵀ's buffers (see qk_first_part)
    auto lookups = [&]() {  // the next pair's boxes, where this warpgroup waits for the other
      if (issuer && more) {
        lookup(nxt.b, nxt.t, len_next, boxes[0]);
        if (nxt_has_b) lookup(nxt.b, nxt.t + 1, len_next, boxes[1]);
      }
    };
    // A segment's last pair: the next request's Q goes in once neither warpgroup reads the Q
    // tile (warpgroup 1 after f0, which warpgroup 0 signals past its Q·Kᵀ; warpgroup 0 after f1:
    // at the pair's start warpgroup 1 could overwrite Q under warpgroup 0's last Q·Kᵀ). Each
    // thread waits for its copies before its signal to the other warpgroup (0: P0; 1: f1),
    // which precedes the other's next Q·Kᵀ, and before its own warpgroup's barrier that precedes
    // its own.
    // A warpgroup's last P · V of the pair: once every warp's is done (its blocks free) the
    // issuer refills them; then the first part of the next pair's Q·Kᵀ (stamps: role 0's events
    // ev_done and ev_qk, the warpgroup's 6).
    auto refill_then_qk = [&](int buf, int c0, int c1, bool present, const Boxes& x, [[maybe_unused]] int ev_done,
                              [[maybe_unused]] int ev_qk) {
      wg_wait0();
      MLAKV_TRACE(0, k, ev_done);
      settle(false);
      named_sync(bar_wg, 128);
      if (issuer && more) issue(buf, c0, c1, present, x);
      MLAKV_TRACE(1 + wg, k, 6);
      qk_first_part(par_next);
      MLAKV_TRACE(0, k, ev_qk);
    };
    float m_in[2], m_new[2], sum[2], ref[2];
    MLAKV_TRACE(1 + wg, k, 7);
    if (wg == 0) {
      // ---- softmax of A from the running maxima; f0 and the new maxima published ----
      if (n_a < kTile) zero_tail(0, n_a, par);
#pragma unroll
      for (int i = 0; i < 2; ++i) m_in[i] = seg_first ? -INFINITY : row_m[16 * w + g + 8 * i];
      rm_tile_softmax(a, s, tok_ok, len, cur.t * kTile, lim, sc, m_in, m_new, sum, qd);
      float f0[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        f0[i] = exp2f(m_in[i] - (m_new[i] == -INFINITY ? 0.0f : m_new[i]));
        if (qd == 0) row_m[16 * w + g + 8 * i] = m_new[i], f0_s[16 * w + g + 8 * i] = f0[i];
      }
      named_arrive(kBarF0, 256);
      MLAKV_TRACE(1, k, 1);
      lookups();
#pragma unroll
      for (int c = 0; c < 4; ++c)
#pragma unroll
        for (int r = 0; r < 4; ++r) pa[c][r] = pack_bf16(s[8 * c + 2 * r], s[8 * c + 2 * r + 1]);
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        rescale(i, f0[i]);
        l_run[i] = l_run[i] * f0[i] + sum[i];
      }
      pv_regs(0);  // o += P0 · V0, left
      // ---- f1 and warpgroup 1's maxima ----
      named_sync(kBarF1, 256);
      MLAKV_TRACE(1, k, 2);
      if (last && more) load_q(nxt.b);
      float f1[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        f1[i] = f1_s[16 * w + g + 8 * i];
        if (last) ref[i] = row_m[16 * w + g + 8 * i];
      }
      wg_wait0();  // P0 · V0 (issued before warpgroup 1's softmax: done)
      MLAKV_TRACE(0, k, 2);
      settle(true);
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        rescale(i, f1[i]);
        l_run[i] *= f1[i];
      }
      // ---- o += P1 · V1, left, at once (its K1 blocks 0–3 refilled after it: the pair's last
      // landing); P0 onto the new maxima for warpgroup 1 behind it; then K0's blocks 0–3 ----
      if (has_b) {
        if (n_b < kTile) zero_tail(1, n_b, par);
        wait_blocks(1, 0, 4, par);
        pv_smem(1, base + S::kP1);
      }
      MLAKV_TRACE(1, k, 5);
      // From P0's bf16 (rounded twice where f1 < 1): S's registers are free from the packing on.
      const bool unit = !__any_sync(0xffffffffu, f1[0] != 1.0f || f1[1] != 1.0f);
#pragma unroll
      for (int c = 0; c < 4; ++c)
#pragma unroll
        for (int r = 0; r < 4; ++r)
          *frag_word(smem + S::kP0, c, r, w, g, qd) = unit ? pa[c][r] : scale_bf16x2(pa[c][r], f1[r & 1]);
      cp_async_wait<0>();
      fence_async_smem();
      named_arrive(kBarP0, 256);
      MLAKV_TRACE(1, k, 3);
      named_sync(bar_wg, 128);  // every warp's P0 · V0 is done: blocks 0–3 of K0 are free
      if (issuer && more) issue(0, 0, 4, true, boxes[0]);
      MLAKV_TRACE(1, k, 4);
      refill_then_qk(1, 0, 4, nxt_has_b, boxes[1], 3, 0);  // P1 · V1 done: K1's blocks 0–3 are free
    } else {
      // ---- softmax of B from warpgroup 0's maxima; f1, the maxima and P1 published ----
      if (has_b && n_b < kTile) zero_tail(1, n_b, par);
      lookups();
      named_sync(kBarF0, 256);
      MLAKV_TRACE(2, k, 1);
      if (last && more) load_q(nxt.b);
      float f0[2], f1[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        m_in[i] = row_m[16 * w + g + 8 * i];
        f0[i] = f0_s[16 * w + g + 8 * i];
      }
      if (has_b) {
        rm_tile_softmax(a, s, tok_ok + 64, len, (cur.t + 1) * kTile, lim, sc, m_in, m_new, sum, qd);
#pragma unroll
        for (int c = 0; c < 4; ++c)
#pragma unroll
          for (int r = 0; r < 4; ++r) {
            pa[c][r] = pack_bf16(s[8 * c + 2 * r], s[8 * c + 2 * r + 1]);
            *frag_word(smem + S::kP1, c, r, w, g, qd) = pa[c][r];
          }
      } else {
#pragma unroll
        for (int i = 0; i < 2; ++i) m_new[i] = m_in[i], sum[i] = 0.0f;
      }
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        f1[i] = exp2f(m_in[i] - (m_new[i] == -INFINITY ? 0.0f : m_new[i]));
        ref[i] = m_new[i];
        if (qd == 0) row_m[16 * w + g + 8 * i] = m_new[i], f1_s[16 * w + g + 8 * i] = f1[i];
      }
      cp_async_wait<0>();
      fence_async_smem();
      named_arrive(kBarF1, 256);
      MLAKV_TRACE(2, k, 2);
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        rescale(i, f0[i] * f1[i]);
        l_run[i] = l_run[i] * f0[i] * f1[i] + sum[i];
      }
      if (has_b) {
        pv_regs(1);  // o += P1 · V1, right
        wg_wait0();
        MLAKV_TRACE(0, k, 6);
        settle(true);
      }
      named_sync(bar_wg, 128);  // blocks 4–8 of K1 are free
      if (issuer && more) issue(1, 4, 9, nxt_has_b, boxes[1]);
      MLAKV_TRACE(2, k, 3);
      // ---- o += P0 · V0, right; K0's blocks 4–8 refilled before the next Q·Kᵀ ----
      named_sync(kBarP0, 256);
      MLAKV_TRACE(2, k, 4);
      if (n_a < kTile) zero_tail(0, n_a, par);
      wait_blocks(0, 4, 8, par);
      pv_smem(0, base + S::kP0);
      MLAKV_TRACE(2, k, 5);
      refill_then_qk(0, 4, 9, true, boxes[0], 7, 4);  // P0 · V0 done: K0's blocks 4–8 are free
    }
    if (last) {  // ---- a segment's end: both halves over the final maxima ----
      rm_write_rows(a, o, l_run, row_l, kBarL, ref, b, slots.slot(a, sch, b, part, payload), row0, wg, w, g, qd, 1.0f);
      if (more) start_segment(nxt.b);
    }
    qk_second_part(par_next);
    MLAKV_TRACE(0, k, 1 + 4 * wg);
    wg_wait0();
    pin(s);
    seg_first = last;
    cur = nxt;
    len = len_next;
  }
  if (wt == 0) MLAKV_TRACE_WIDE(1 + wg, kTrEnd);
  static_assert(S::kQ >= kMergeScratchBytes, "the in-grid merge's scratch lies in the KV stages");
  slots.merge_in_grid<kRowsCta>(a, sch, row0, ct, smem);
#endif
}

}  // namespace mlakv::cuda::mla
