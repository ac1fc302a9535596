#!/usr/bin/env python3
"""Error of dequantizing an fp8_ds_mla cache to bf16 before the dot products (the 64-row CTA-pair
form of session 14: e4m3 · group scale rounded once to bf16, as FlashMLA does), against the fp64
reference on the same stored cache, next to the exact form (the 32-row kernels: scales applied in
fp32). Data as the GPU tests make it: N(0,1) bf16 latents and rope, N(0,1) bf16 queries, softmax
scale 1/sqrt(576); P rounded to bf16 in both forms. SPEC §6: out ≤ 4e-3, lse ≤ 4e-3 for this
format. Needs numpy; reuses fp8_split_error.py's e4m3 / bf16 rounding.

  scripts/dsmla_dequant_error.py [--heads 16] [--seed 1]
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fp8_split_error import bf16, e4m3  # noqa: E402


def one(rng, ctx, heads, round_k):
    x = bf16(rng.standard_normal((ctx, 512))).reshape(ctx, 4, 128)
    scale = np.maximum(np.abs(x).max(axis=2, keepdims=True) / 448.0, np.finfo(np.float32).tiny)
    scale = scale.astype(np.float32).astype(np.float64)
    stored = e4m3(x / scale)
    k_ref = (stored * scale).reshape(ctx, 512)
    k = bf16((stored * scale).astype(np.float32)).reshape(ctx, 512) if round_k else k_ref
    rope = bf16(rng.standard_normal((ctx, 64)))
    q = bf16(rng.standard_normal((heads, 576)))
    inv = 1.0 / np.sqrt(576.0)

    def attend(kk, round_p):
        s = (q[:, :512] @ kk.T + q[:, 512:] @ rope.T) * inv
        m = s.max(axis=1, keepdims=True)
        p = np.exp(s - m)
        l = p.sum(axis=1, keepdims=True)
        o = ((bf16(p) if round_p else p) @ kk) / l
        return o, (m + np.log(l))[:, 0]

    o_ref, lse_ref = attend(k_ref, False)
    o, lse = attend(k, True)
    return np.linalg.norm(o - o_ref) / np.linalg.norm(o_ref), np.abs(lse - lse_ref).max()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    for ctx in (1, 64, 1024, 4096, 16384, 65536):
        e = one(rng, ctx, a.heads, False)
        r = one(rng, ctx, a.heads, True)
        print(f"ctx {ctx:6d}: scales in fp32: out {e[0]:.2e} lse {e[1]:.2e} | dequantized to bf16: out {r[0]:.2e} lse {r[1]:.2e}")


if __name__ == "__main__":
    main()
