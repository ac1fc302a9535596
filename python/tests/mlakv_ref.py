"""NumPy references for the formats and ops (SPEC §2-3), written from the specification rather
than from the C++ code, so that the bindings are checked against an independent model."""

from __future__ import annotations

import numpy as np

import mlakv

LATENT, ROPE, HEAD = 512, 64, 576
FLT_MIN = np.float32(np.finfo(np.float32).tiny)


def _e4m3_table() -> np.ndarray:
    vals = np.empty(256, dtype=np.float64)
    for c in range(256):
        sign = -1.0 if c & 0x80 else 1.0
        exp, man = (c >> 3) & 0xF, c & 0x7
        if exp == 0xF and man == 0x7:
            vals[c] = np.nan
        elif exp == 0:
            vals[c] = sign * man * 2.0**-9
        else:
            vals[c] = sign * (1 + man / 8) * 2.0 ** (exp - 7)
    return vals


E4M3 = _e4m3_table()
_POS = E4M3[:127]  # codes 0x00..0x7e: the finite non-negative values, ascending


def e4m3_decode(codes) -> np.ndarray:
    return E4M3[np.asarray(codes, dtype=np.uint8)].astype(np.float32)


def e4m3_encode(x) -> np.ndarray:
    """Round to nearest even, saturate to +-448, NaN -> 0x7f (sign kept)."""
    x = np.asarray(x, dtype=np.float32)
    a = np.abs(x).astype(np.float64)
    hi = np.clip(np.searchsorted(_POS, a), 0, 126)
    lo = np.clip(hi - 1, 0, 126)
    d_lo, d_hi = np.abs(a - _POS[lo]), np.abs(_POS[hi] - a)
    code = np.where(d_lo < d_hi, lo, np.where(d_hi < d_lo, hi, np.where(lo % 2 == 0, lo, hi)))
    code = np.where(a >= 448, 126, code).astype(np.uint8)
    code = np.where(np.signbit(x), code | 0x80, code).astype(np.uint8)
    return np.where(np.isnan(x), np.uint8(0x7F) | (np.signbit(x).astype(np.uint8) << 7), code).astype(np.uint8)


def bf16(x) -> np.ndarray:
    """float32 -> bf16 bits."""
    return mlakv.float32_to_bf16(np.asarray(x, dtype=np.float32))


def f32(bits) -> np.ndarray:
    return mlakv.bf16_to_float32(bits)


def rand_bf16(rng, *shape, scale=1.0) -> np.ndarray:
    return bf16(rng.standard_normal(shape).astype(np.float32) * np.float32(scale))


def token_bytes(fmt: str) -> int:
    return {"bf16": 1152, "fp8": 576, "fp8_ds_mla": 656, "dsv4": 584}[fmt]


def encode_mla(fmt: str, latent: np.ndarray, rope: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """One token (float32 latent [512], rope [64]) -> its stored bytes."""
    latent = latent.astype(np.float32)
    rope = rope.astype(np.float32)
    if fmt == "bf16":
        return np.concatenate([bf16(latent), bf16(rope)]).view(np.uint8)
    if fmt == "fp8":
        return e4m3_encode(np.concatenate([latent, rope]) / np.float32(scale))
    assert fmt == "fp8_ds_mla"
    tiles = latent.reshape(4, 128)
    s = np.maximum(np.abs(tiles).max(axis=1) / np.float32(448), FLT_MIN).astype(np.float32)
    q = e4m3_encode(tiles / s[:, None]).reshape(-1)
    return np.concatenate([q, s.view(np.uint8), bf16(rope).view(np.uint8)])


def decode_mla(fmt: str, tok: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Stored bytes of one bf16 / fp8 / fp8_ds_mla token -> float32 [576]."""
    tok = np.ascontiguousarray(tok, dtype=np.uint8)
    if fmt == "bf16":
        return f32(tok.view(np.uint16))
    if fmt == "fp8":
        return e4m3_decode(tok) * np.float32(scale)
    s = tok[512:528].view(np.float32)
    lat = (e4m3_decode(tok[:512]).reshape(4, 128) * s[:, None]).reshape(-1)
    return np.concatenate([lat, f32(tok[528:656].view(np.uint16))]).astype(np.float32)


def ue8m0_exponent(amax: np.ndarray) -> np.ndarray:
    x = np.maximum(amax.astype(np.float32), np.float32(1e-4)) / np.float32(448)
    m, k = np.frexp(x)
    return np.where(m == 0.5, k - 1, k)


def encode_dsv4(row: np.ndarray):
    """float32 [512] -> (576 data bytes, 8 scale bytes)."""
    row = row.astype(np.float32)
    groups = row[:448].reshape(7, 64)
    e = ue8m0_exponent(np.abs(groups).max(axis=1))
    q = e4m3_encode(np.ldexp(groups, -e[:, None]).astype(np.float32)).reshape(-1)
    scales = np.zeros(8, dtype=np.uint8)
    scales[:7] = np.clip(e + 127, 0, 255)
    return np.concatenate([q, bf16(row[448:]).view(np.uint8)]), scales


def decode_dsv4(data: np.ndarray, scales: np.ndarray) -> np.ndarray:
    data = np.ascontiguousarray(data, dtype=np.uint8)
    s = np.ldexp(np.float32(1), scales[:7].astype(np.int32) - 127).astype(np.float32)
    lat = (e4m3_decode(data[:448]).reshape(7, 64) * s[:, None]).reshape(-1)
    return np.concatenate([lat, f32(data[448:576].view(np.uint16))]).astype(np.float32)


class ByteCache:
    """The expected cache, built in NumPy: num_blocks blocks of `stride` bytes."""

    def __init__(self, fmt: str, num_blocks: int, block_size: int, stride: int):
        self.fmt, self.bs, self.stride = fmt, block_size, stride
        self.bytes = np.zeros((num_blocks, stride), dtype=np.uint8)

    def put_mla(self, slot: int, stored: np.ndarray):
        b, k = divmod(slot, self.bs)
        n = token_bytes(self.fmt)
        self.bytes[b, k * n:(k + 1) * n] = stored

    def get_mla(self, slot: int) -> np.ndarray:
        b, k = divmod(slot, self.bs)
        n = token_bytes(self.fmt)
        return self.bytes[b, k * n:(k + 1) * n]

    def put_dsv4(self, slot: int, data: np.ndarray, scales: np.ndarray):
        b, k = divmod(slot, self.bs)
        self.bytes[b, 576 * k:576 * (k + 1)] = data
        self.bytes[b, 576 * self.bs + 8 * k:576 * self.bs + 8 * (k + 1)] = scales

    def get_dsv4(self, slot: int):
        b, k = divmod(slot, self.bs)
        return self.bytes[b, 576 * k:576 * (k + 1)], self.bytes[b, 576 * self.bs + 8 * k:576 * self.bs + 8 * (k + 1)]


def attention(q: np.ndarray, keys: np.ndarray, scale: float, visible: int):
    """fp64 reference for one query row q [576] over keys [n, 576] (float): (out [512], lse)."""
    if visible <= 0:
        return np.zeros(LATENT), -np.inf
    k = keys[:visible].astype(np.float64)
    s = scale * (k @ q.astype(np.float64))
    m = s.max()
    p = np.exp(s - m)
    denom = p.sum()
    return (p @ k[:, :LATENT]) / denom, m + np.log(denom)


def rel_err(x, ref) -> float:
    x, ref = np.asarray(x, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    n = np.linalg.norm(ref)
    return float(np.linalg.norm(x - ref) / (n if n else 1.0))
