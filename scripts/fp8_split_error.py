#!/usr/bin/env python3
"""Error of an FP8-tensor-core data flow for the per-tensor `fp8` cache, before any kernel.

The question (docs/perf/decode-notes.md, session 9): can decode read the e4m3 K/V tile straight
into FP8 wgmma (no widened bf16 stage) and still meet SPEC §6 against the reference on the same
stored cache (out ≤ 4e-3 relative Frobenius, lse ≤ 1e-3 absolute)? FP8 wgmma takes e4m3 on both
sides, so the bf16 query and the softmax probabilities must be split into sums of e4m3 terms:

  Q ≈ Σ_i s_i · q_i   (per row, s_i powers of two, q_i e4m3: each term takes the previous residual)
  P ≈ Σ_j t_j · p_j   (per row and 64-token tile, same construction)

S = Σ_i s_i (K · q_iᵀ) and O = Σ_j t_j (p_j · V) then use only e4m3 × e4m3 products with fp32
sums. Hopper's FP8 tensor cores keep fewer bits while they sum a k-group (the DeepSeek-V3 report:
about 14); --acc-bits rounds each 32-wide partial sum to that many significant bits before it
joins the fp32 accumulator, a pessimistic model of it.

  scripts/fp8_split_error.py [--q-terms 3] [--p-terms 2] [--acc-bits 14] [--ctx 4096] ...
  scripts/fp8_split_error.py --ds-mla ...   (the fp8_ds_mla form of session 10, below)

--ds-mla: the `fp8_ds_mla` cache (512 e4m3 dims with a scale per token and 128-dim group, 64 bf16
rope dims) in the kernel's form: the query's 512 dims as two e4m3 terms (s1, s1/16), each group's
partial S weighed by the token's group scale, the rope in bf16 (exact products, fp32 sums); P per
group as P · scale_g(token) / σ_g, σ_g the tile's largest group scale, two e4m3 terms at 2^-8,
each group's product added to O at σ_g.

Needs numpy. Prints the worst and median errors over the requests against an fp64 reference.
"""
import argparse
import math

import numpy as np


def e4m3(x):
    """Round to the nearest e4m3 value (ties to even), saturating at ±448; float64 in and out."""
    x = np.asarray(x, dtype=np.float64)
    a = np.abs(x)
    e = np.floor(np.log2(np.where(a > 0, a, 1.0)))
    e = np.maximum(e, -6.0)  # below 2^-6: subnormals, quantum 2^-9
    q = np.exp2(e - 3.0)
    r = np.round(a / q) * q
    return np.sign(x) * np.minimum(r, 448.0)


def bf16(x):
    """Round to bf16 (ties to even), float64 in and out."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
    return u.view(np.float32).astype(np.float64)


def pow2_scale(rows, axis=-1):
    """Per-row power of two that maps the row's largest magnitude to at most 448."""
    amax = np.max(np.abs(rows), axis=axis, keepdims=True)
    amax = np.where(amax > 0, amax, 1.0)
    return np.exp2(np.ceil(np.log2(amax / 448.0)))


def split(x, terms, fixed=None, step=None):
    """x ≈ Σ s_i · q_i, row-wise: s_i from each residual's largest magnitude, or the fixed scales
    given, or (step) the first term's scale divided by `step` per further term."""
    out, r = [], np.array(x, dtype=np.float64)
    for i in range(terms):
        if fixed is not None:
            s = fixed[i]
        elif step is not None and i > 0:
            s = out[0][0] / step**i
        else:
            s = pow2_scale(r)
        q = e4m3(r / s)
        out.append((s, q))
        r = r - s * q
    return out


def round_bits(x, bits):
    """Round to `bits` significant bits (ties to even), float64."""
    if bits <= 0:
        return x
    m, e = np.frexp(x)
    return np.ldexp(np.round(m * 2.0**bits) / 2.0**bits, e)


def fp8_matmul(a, b, acc_bits, chain_bits=0, acc=None):
    """a [m, k] · b [k, n] of e4m3 values: exact products, 32-wide partial sums (rounded to
    acc_bits), accumulated in fp32 — or, with chain_bits, in an accumulator that keeps only that
    many bits after each k-step (a model of the tensor cores' own accumulation, which the
    DeepSeek-V3 report puts at ~14 bits). `acc`: an accumulator to continue."""
    m, k = a.shape
    acc = np.zeros((m, b.shape[1]), dtype=np.float64) if acc is None else acc
    for c in range(0, k, 32):
        part = round_bits(a[:, c:c + 32] @ b[c:c + 32, :], acc_bits)  # exact in fp64 for 32 e4m3 products
        acc = round_bits(acc + part, chain_bits) if chain_bits else (acc + part).astype(np.float32).astype(np.float64)
    return acc


def reference(s, v):
    """fp64 softmax(s) · v and the natural-log LSE per row."""
    m = s.max(axis=1, keepdims=True)
    p = np.exp(s - m)
    l = p.sum(axis=1, keepdims=True)
    return (p @ v) / l, (m + np.log(l))[:, 0]


def online_softmax(s, dv, tile):
    """The kernel's online softmax over 64-token tiles in fp32: tile(o, alpha, t, p) returns the
    new o (alpha applied) and the tile's row sums. Returns o, l and the final maxima."""
    heads, ctx = s.shape
    m = np.full((heads, 1), -np.inf)
    l = np.zeros((heads, 1))
    o = np.zeros((heads, dv))
    for t in range(0, ctx, 64):
        st = s[:, t:t + 64]
        m_new = np.maximum(m, st.max(axis=1, keepdims=True))
        alpha = np.exp(m - m_new)
        p = np.exp(st - m_new).astype(np.float32).astype(np.float64)
        o, psum = tile(o, alpha, t, p)
        l = (l * alpha + psum).astype(np.float32)
        m = m_new
    return o, l, m


def errors(out, lse, o_ref, lse_ref):
    return np.linalg.norm(out - o_ref) / np.linalg.norm(o_ref), np.max(np.abs(lse - lse_ref))


def one_request(rng, heads, ctx, args):
    dk, dv = 576, 512
    kscale = 0.02
    k_store = e4m3(rng.standard_normal((ctx, dk)) / kscale)  # the stored cache (e4m3 values)
    q = rng.standard_normal((heads, dk))
    if args.q_outliers:
        q[:, rng.choice(dk, 8, replace=False)] *= args.q_outliers  # a few large channels per head
    q = bf16(q)
    sm = 1.0 / math.sqrt(192.0)
    o_ref, lse_ref = reference((q @ (k_store * kscale).T) * sm, k_store[:, :dv] * kscale)

    # The split data flow: S from the Q terms, online softmax per 64-token tile in fp32, P terms.
    s = np.zeros((heads, ctx))
    cb = args.chain_bits
    for sc, qi in split(q, args.q_terms, step=16.0 if args.q_step else None):
        if args.no_promote:  # one accumulator over the 576 dims
            s += sc * fp8_matmul(qi, k_store.T, args.acc_bits, cb)
        else:  # one per 128 dims (and the rope), summed in fp32
            for c0 in range(0, 576, 128):
                s += sc * fp8_matmul(qi[:, c0:c0 + 128], k_store[:, c0:c0 + 128].T, args.acc_bits, cb)
    s = (s * kscale * sm).astype(np.float32).astype(np.float64)
    fixed = [2.0**-8] * 3 if args.p_one_scale else [2.0**-8, 2.0**-12, 2.0**-16] if args.p_fixed else None
    chained = args.no_promote and cb  # o itself the tensor cores' accumulator, in units of 2^-8

    def tile(o, alpha, t, p):
        v = k_store[t:t + 64, :dv]
        psum = np.zeros((p.shape[0], 1))
        pv = o * alpha if args.no_promote else np.zeros_like(o)
        for tj, pj in split(p, args.p_terms, fixed):
            pv = fp8_matmul(pj * tj / 2.0**-8, v, args.acc_bits, cb, pv) if chained else \
                pv + tj * fp8_matmul(pj, v, args.acc_bits, 0 if args.no_promote else cb)
            psum += tj * pj.sum(axis=1, keepdims=True)
        o = pv if args.no_promote else (o * alpha + pv).astype(np.float32).astype(np.float64)
        return o, psum if args.l_from_terms else p.sum(axis=1, keepdims=True)

    o, l, m = online_softmax(s, dv, tile)
    return errors(o * (2.0**-8 if chained else 1.0) * kscale / l, (m + np.log(l))[:, 0], o_ref, lse_ref)


def one_request_ds(rng, heads, ctx, args):
    dn, dr = 512, 64
    k = rng.standard_normal((ctx, dn + dr)) * 0.5
    k[:, :dn] *= np.exp(rng.standard_normal((ctx, 1)))  # tokens of different magnitudes
    scale = np.abs(k[:, :dn]).reshape(ctx, 4, 128).max(axis=2) / 448.0  # [ctx, 4] (fp32 in the cache)
    scale = scale.astype(np.float32).astype(np.float64)
    k_e4 = e4m3(k[:, :dn] / np.repeat(scale, 128, axis=1))  # the stored e4m3 values
    k_rope = bf16(k[:, dn:])
    k_deq = k_e4 * np.repeat(scale, 128, axis=1)
    q = rng.standard_normal((heads, dn + dr))
    if args.q_outliers:
        q[:, rng.choice(dn + dr, 8, replace=False)] *= args.q_outliers
    q = bf16(q)
    sm = 1.0 / math.sqrt(192.0)
    o_ref, lse_ref = reference((q[:, :dn] @ k_deq.T + q[:, dn:] @ k_rope.T) * sm, k_deq)

    # S: per group, the two query terms' e4m3 products (32-wide partial sums), weighed by the
    # tokens' group scales; the rope in fp32.
    s = (q[:, dn:] @ k_rope.T).astype(np.float32).astype(np.float64)
    for sc, qi in split(q[:, :dn], 2, step=16.0):
        for g in range(4):
            cols = slice(128 * g, 128 * g + 128)
            s += sc * fp8_matmul(qi[:, cols], k_e4[:, cols].T, args.acc_bits, args.chain_bits) * scale[:, g][None, :]
    s = (s * sm).astype(np.float32).astype(np.float64)

    def tile(o, alpha, t, p):
        pv = np.zeros_like(o)
        for g in range(4):
            cols = slice(128 * g, 128 * g + 128)
            sig = scale[t:t + 64, g].max()
            pg = p * (scale[t:t + 64, g] / sig)[None, :]
            acc = np.zeros((p.shape[0], 128))
            for tj, pj in split(pg, 2, [2.0**-8] * 2):
                acc += tj * fp8_matmul(pj, k_e4[t:t + 64, cols], args.acc_bits, args.chain_bits)
            pv[:, cols] = sig * acc.astype(np.float32)
        return (o * alpha + pv).astype(np.float32).astype(np.float64), p.sum(axis=1, keepdims=True)

    o, l, m = online_softmax(s, dn, tile)
    return errors(o / l, (m + np.log(l))[:, 0], o_ref, lse_ref)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--q-terms", type=int, default=3)
    ap.add_argument("--p-terms", type=int, default=2)
    ap.add_argument("--acc-bits", type=int, default=14, help="significant bits of a 32-wide partial sum (0: exact)")
    ap.add_argument("--l-from-terms", action="store_true", help="row sums from the P terms, not from fp32 P")
    ap.add_argument("--p-fixed", action="store_true",
                    help="P terms at the fixed scales 2^-8, 2^-12, 2^-16 (P <= 1), not per row and tile")
    ap.add_argument("--q-outliers", type=float, default=0.0, help="scale 8 query channels by this factor")
    ap.add_argument("--q-step", action="store_true",
                    help="query terms after the first at the first's scale / 16^i (the fp8-tensor kernel's choice)")
    ap.add_argument("--p-one-scale", action="store_true",
                    help="every P term at the scale 2^-8 (the residual in e4m3 as it is: the terms can "
                         "share one accumulator, as k-steps over the same V)")
    ap.add_argument("--ds-mla", action="store_true", help="the fp8_ds_mla cache in the session-10 kernel form")
    ap.add_argument("--chain-bits", type=int, default=0,
                    help="model the tensor cores' accumulator as keeping this many bits after each k-step (0: fp32)")
    ap.add_argument("--no-promote", action="store_true",
                    help="fp8: S in one accumulator over 576 dims and o accumulated across tiles in the tensor "
                         "cores (session 9's form), instead of per 128 dims and per tile with fp32 sums")
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--ctx", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--requests", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    if args.ds_mla:
        print(f"fp8_ds_mla form (two query terms, P per group over the tile's largest scale, two terms), "
              f"partial sums to {args.acc_bits or 'all'} bits; SPEC §6: out <= 4e-3, lse <= 4e-3 (fp8_ds_mla)")
    else:
        print(f"q terms {args.q_terms}, p terms {args.p_terms}, partial sums to {args.acc_bits or 'all'} bits"
              f"{', l from the P terms' if args.l_from_terms else ''}{', fixed P scales' if args.p_fixed else ''}{', one P scale' if args.p_one_scale else ''}{', Q scales s1/16^i' if args.q_step else ''}; SPEC §6: out <= 4e-3, lse <= 1e-3")
    for ctx in args.ctx:
        one = one_request_ds if args.ds_mla else one_request
        errs = [one(rng, args.heads, ctx, args) for _ in range(args.requests)]
        o = [e[0] for e in errs]
        x = [e[1] for e in errs]
        print(f"  ctx {ctx:6d}: out worst {max(o):.2e} median {np.median(o):.2e}   lse worst {max(x):.2e} median {np.median(x):.2e}")


if __name__ == "__main__":
    main()
