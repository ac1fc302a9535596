"""Every op and format on the CPU backend with NumPy arrays, against the NumPy references in
mlakv_ref (bit-exact for writes and gathers, fp64 softmax for attention)."""

from __future__ import annotations

import numpy as np
import pytest

import mlakv
import mlakv_ref as ref

MLA_FORMATS = ["bf16", "fp8", "fp8_ds_mla"]


def make_slots(rng, capacity, tokens, skip_every=5):
    slots = rng.permutation(capacity)[:tokens].astype(np.int64)
    slots[::skip_every] = -1  # DCP's "not mine": must be skipped
    return slots


@pytest.mark.parametrize("fmt", MLA_FORMATS)
@pytest.mark.parametrize("block_size", [1, 16, 64])
@pytest.mark.parametrize("in_dtype", ["bf16", "f32"])
def test_write_cache_bit_exact(fmt, block_size, in_dtype):
    rng = np.random.default_rng(hash((fmt, block_size, in_dtype)) % 2**32)
    num_blocks, tokens = max(2, 96 // block_size), 40
    scale = 0.75
    cache = mlakv.empty_cache(fmt, num_blocks, block_size, scale=scale if fmt == "fp8" else None)
    # Padded rows (stride > width) and extra rows beyond the slot count are allowed.
    kv_full = rng.standard_normal((tokens + 3, 520)).astype(np.float32) * 3
    pe = rng.standard_normal((tokens + 3, 64)).astype(np.float32)
    if in_dtype == "bf16":
        kv_full, pe = ref.bf16(kv_full), ref.bf16(pe)
    kv_c = kv_full[:, :512]
    slots = make_slots(rng, cache.capacity, tokens)
    out = mlakv.write_cache(kv_c, pe, cache, slots)
    assert out is cache.tensor

    lat = ref.f32(kv_c) if in_dtype == "bf16" else kv_c
    rope = ref.f32(pe) if in_dtype == "bf16" else pe
    expect = ref.ByteCache(fmt, num_blocks, block_size, cache.block_stride)
    for t, s in enumerate(slots):
        if s >= 0:
            expect.put_mla(int(s), ref.encode_mla(fmt, lat[t], rope[t], scale))
    got = cache.tensor.reshape(num_blocks, -1).view(np.uint8)
    np.testing.assert_array_equal(got, expect.bytes)


def test_concat_and_cache_mla_vllm_convention():
    """vLLM's positional order with a raw uint8 tensor, kv_cache_dtype and a scale tensor."""
    rng = np.random.default_rng(1)
    kv_cache = np.zeros(mlakv.cache_shape("fp8", 4, 16), dtype=np.uint8)
    scale = np.array([0.5], dtype=np.float32)
    kv_c, pe = ref.rand_bf16(rng, 8, 512), ref.rand_bf16(rng, 8, 64)
    slots = np.arange(8, dtype=np.int64) * 3
    mlakv.concat_and_cache_mla(kv_c, pe, kv_cache, slots, "fp8", scale)
    for t in range(8):
        b, k = divmod(int(slots[t]), 16)
        np.testing.assert_array_equal(kv_cache[b, k], ref.encode_mla("fp8", ref.f32(kv_c[t]), ref.f32(pe[t]), 0.5))


def filled_cache(fmt, num_blocks, block_size, rng, scale=0.5):
    """A cache whose every slot holds a random token, and the NumPy mirror of its bytes."""
    cache = mlakv.empty_cache(fmt, num_blocks, block_size, scale=scale if fmt == "fp8" else None)
    cap = cache.capacity
    if fmt == "dsv4":
        k = ref.rand_bf16(rng, cap, 512)
        mlakv.dsv4_write(k, cache, np.arange(cap, dtype=np.int64))
    else:
        mlakv.write_cache(ref.rand_bf16(rng, cap, 512), ref.rand_bf16(rng, cap, 64), cache,
                          np.arange(cap, dtype=np.int64))
    return cache, cache.tensor.reshape(num_blocks, -1).view(np.uint8)


def packed_token(fmt, raw, block_size, slot):
    b, k = divmod(slot, block_size)
    if fmt == "dsv4":
        return np.concatenate([raw[b, 576 * k:576 * (k + 1)], raw[b, 576 * block_size + 8 * k:576 * block_size + 8 * (k + 1)]])
    n = ref.token_bytes(fmt)
    return raw[b, k * n:(k + 1) * n]


def decode_packed(fmt, tok, scale):
    return ref.decode_dsv4(tok[:576], tok[576:]) if fmt == "dsv4" else ref.decode_mla(fmt, tok, scale)


def gather_setup(rng, block_size, num_blocks=12):
    lens = np.array([5, 0, 2 * block_size + 3, 1], dtype=np.int32)
    starts = np.array([3, 0, 1, block_size - 1], dtype=np.int32)
    cu = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    max_blocks = (int((starts + lens).max()) + block_size - 1) // block_size
    table = rng.integers(0, num_blocks, size=(len(lens), max_blocks)).astype(np.int32)
    return lens, starts, cu, table


@pytest.mark.parametrize("fmt", MLA_FORMATS + ["dsv4"])
@pytest.mark.parametrize("block_size", [1, 16])
def test_gather_cache_and_dequant(fmt, block_size):
    rng = np.random.default_rng(7)
    cache, raw = filled_cache(fmt, 12, block_size, rng)
    lens, starts, cu, table = gather_setup(rng, block_size)
    raw_dst = mlakv.gather_cache(cache, table, cu, seq_starts=starts)
    deq = mlakv.gather_dequant_cache(cache, table, cu, seq_starts=starts, out_dtype="float32")
    deq_bf16 = mlakv.gather_dequant_cache(cache, table, cu, seq_starts=starts)
    assert deq.shape == (int(cu[-1]), cache.row_width) and deq.dtype == np.float32
    assert deq_bf16.dtype == np.uint16
    scale = 0.5
    for b in range(len(lens)):
        for p in range(lens[b]):
            pos = int(starts[b]) + p
            slot = int(table[b, pos // block_size]) * block_size + pos % block_size
            tok = packed_token(fmt, raw, block_size, slot)
            row = int(cu[b]) + p
            np.testing.assert_array_equal(raw_dst[row].view(np.uint8), tok)
            want = decode_packed(fmt, tok, scale)
            np.testing.assert_array_equal(deq[row], want)
            np.testing.assert_array_equal(deq_bf16[row], ref.bf16(want))


def test_gather_token_to_seq_and_raw_views():
    rng = np.random.default_rng(3)
    cache, raw = filled_cache("bf16", 6, 16, rng)
    lens, starts, cu, table = gather_setup(rng, 16, 6)
    t2s = np.repeat(np.arange(len(lens), dtype=np.int32), lens)
    a = mlakv.gather_cache(cache, table, cu, seq_starts=starts)
    b = mlakv.gather_cache(cache, table, cu, seq_starts=starts, token_to_seq=t2s, num_tokens=int(cu[-1]))
    u8 = np.empty((int(cu[-1]), 1152), dtype=np.uint8)
    mlakv.gather_cache(cache, table, cu, u8, seq_starts=starts)
    assert a.dtype == np.uint16 and a.shape[1] == 576
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a.view(np.uint8), u8)
    c = mlakv.cp_gather_cache(cache, table, cu, seq_starts=starts)
    np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("block_size", [1, 16, 64])
def test_dsv4_write_bit_exact(block_size):
    rng = np.random.default_rng(block_size)
    num_blocks, tokens = max(2, 80 // block_size), 33
    cache = mlakv.empty_cache("dsv4", num_blocks, block_size)
    assert cache.block_stride % 576 == 0 and cache.block_stride >= 584 * block_size
    k = ref.rand_bf16(rng, tokens + 2, 512, scale=4)
    k[0, :64] = 0  # an all-zero group: the 1e-4 floor on amax
    slots = make_slots(rng, cache.capacity, tokens)
    mlakv.quantize_and_insert_k_cache(k, cache, slots)
    expect = ref.ByteCache("dsv4", num_blocks, block_size, cache.block_stride)
    for t, s in enumerate(slots):
        if s >= 0:
            expect.put_dsv4(int(s), *ref.encode_dsv4(ref.f32(k[t])))
    np.testing.assert_array_equal(cache.tensor, expect.bytes)


def test_dsv4_dequant_gather_last_tokens():
    rng = np.random.default_rng(11)
    bs = 16
    cache, raw = filled_cache("dsv4", 10, bs, rng)
    seq_lens = np.array([20, 0, 33, 7], dtype=np.int32)
    gather_lens = np.array([5, 0, 33, 7], dtype=np.int32)
    table = rng.integers(0, 10, size=(4, 3)).astype(np.int32)
    offset, max_rows = 2, 40
    sentinel = ref.bf16(np.float32(7.0))
    out = np.full((4, max_rows, 512), sentinel, dtype=np.uint16)
    mlakv.dsv4_dequant_gather(cache, table, seq_lens, out, gather_lens=gather_lens, offset=offset)
    for r in range(4):
        n, L = int(gather_lens[r]), int(seq_lens[r])
        for i in range(n):
            pos = L - n + i
            slot = int(table[r, pos // bs]) * bs + pos % bs
            want = decode_packed("dsv4", packed_token("dsv4", raw, bs, slot), 1.0)
            np.testing.assert_array_equal(out[r, offset + i], ref.bf16(want))
        assert (out[r, :offset] == sentinel).all() and (out[r, offset + n:] == sentinel).all()
    # Allocating form, all of seq_len, vLLM's name.
    out2 = mlakv.dequantize_and_gather_k_cache(cache, table, seq_lens, max_rows=33)
    assert out2.shape == (4, 33, 512) and out2.dtype == np.uint16
    np.testing.assert_array_equal(out2[2], out[2, offset:offset + 33])


def decode_reference(fmt, raw, block_size, q_f32, table, seq_lens, scale, softmax_scale, causal, cache_scale=0.5):
    B, s_q, H, _ = q_f32.shape
    out = np.zeros((B, s_q, H, 512))
    lse = np.zeros((B, s_q, H))
    for b in range(B):
        L = int(seq_lens[b])
        keys = np.stack([decode_packed(fmt, packed_token(fmt, raw, block_size,
                                                           int(table[b, p // block_size]) * block_size + p % block_size),
                                       cache_scale) for p in range(L)]) if L else np.zeros((0, 576))
        for i in range(s_q):
            visible = L - s_q + i + 1 if causal else L
            for h in range(H):
                out[b, i, h], lse[b, i, h] = ref.attention(q_f32[b, i, h], keys, softmax_scale, visible)
    return out, lse


@pytest.mark.parametrize("fmt", MLA_FORMATS)
@pytest.mark.parametrize("s_q,causal", [(1, True), (3, True), (2, False)])
def test_mla_decode_vs_fp64(fmt, s_q, causal):
    rng = np.random.default_rng(hash((fmt, s_q, causal)) % 2**32)
    bs, H = 16, 4
    cache, raw = filled_cache(fmt, 10, bs, rng)
    seq_lens = np.array([37, 0, 1, 64], dtype=np.int32)
    table = rng.integers(0, 10, size=(4, 4)).astype(np.int32)
    q = ref.rand_bf16(rng, 4, s_q, H, 576)
    sm = 1 / np.sqrt(192)
    out, lse = mlakv.mla_decode(q, cache, table, seq_lens, sm, causal, out_dtype="float32")
    out_b, lse_b = mlakv.mla_decode(q, cache, table, seq_lens, softmax_scale=sm, causal=causal)
    want_o, want_l = decode_reference(fmt, raw, bs, ref.f32(q), table, seq_lens, 0.5, sm, causal)
    assert out.dtype == np.float32 and out_b.dtype == np.uint16 and lse.dtype == np.float32
    fin = np.isfinite(want_l)
    assert ref.rel_err(out, want_o) < 1e-5
    assert ref.rel_err(ref.f32(out_b), want_o) < 4e-3
    np.testing.assert_allclose(lse[fin], want_l[fin], atol=1e-5, rtol=0)
    # Request 1 sees nothing: zero output, lse -inf, never NaN.
    assert (lse[1] == -np.inf).all() and (out[1] == 0).all()
    assert np.isneginf(lse[~fin]).all() and not np.isnan(out).any()
    np.testing.assert_array_equal(lse, lse_b)


def test_mla_decode_e4m3_query_and_explicit_buffers():
    rng = np.random.default_rng(5)
    cache, raw = filled_cache("bf16", 4, 16, rng)
    seq_lens = np.array([40, 9], dtype=np.int32)
    table = np.array([[0, 1, 2], [3, 0, 0]], dtype=np.int32)
    qf = rng.standard_normal((2, 1, 8, 576)).astype(np.float32)
    q8 = ref.e4m3_encode(qf / 0.25)
    out = np.empty((2, 1, 8, 512), dtype=np.float32)
    lse = np.empty((2, 1, 8), dtype=np.float32)
    ws_bytes = mlakv.mla_decode_workspace_size(2, 1, 8, "cpu")
    ws = np.empty(ws_bytes, dtype=np.uint8)
    r = mlakv.mla_decode(q8, cache, table, seq_lens, 0.06, q_scale=0.25, out=out, lse=lse, workspace=ws)
    assert r[0] is out and r[1] is lse
    want_o, want_l = decode_reference("bf16", raw, 16, ref.e4m3_decode(q8) * np.float32(0.25), table, seq_lens, 1, 0.06,
                                      True)
    assert ref.rel_err(out, want_o) < 1e-5
    np.testing.assert_allclose(lse, want_l, atol=1e-5, rtol=0)


def merge_reference(oa, la, ob, lb):
    la, lb = [np.where(np.isfinite(x) | np.isneginf(x), x, -np.inf).astype(np.float64) for x in (la, lb)]
    m = np.maximum(la, lb)
    safe = np.where(np.isneginf(m), 0, m)
    wa, wb = np.exp(la - safe), np.exp(lb - safe)
    tot = wa + wb
    lse = np.where(tot > 0, safe + np.log(np.where(tot > 0, tot, 1)), -np.inf)
    wa, wb = [np.where(tot > 0, w / np.where(tot > 0, tot, 1), 0) for w in (wa, wb)]
    return oa * wa[..., None] + ob * wb[..., None], lse


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_merge_states(dtype):
    rng = np.random.default_rng(2)
    N, H, D = 6, 4, 512
    oa = rng.standard_normal((N, H, D)).astype(np.float32)
    ob = rng.standard_normal((N, H, D)).astype(np.float32)
    la = (rng.standard_normal((N, H)) * 3).astype(np.float32)
    lb = (rng.standard_normal((N, H)) * 3).astype(np.float32)
    la[0, 0], lb[0, 1], la[1, 2], lb[1, 2] = -np.inf, np.inf, np.nan, -np.inf
    la[2, 3] = lb[2, 3] = -np.inf
    if dtype == "bf16":
        oa_in, ob_in = ref.bf16(oa), ref.bf16(ob)
        oa, ob = ref.f32(oa_in), ref.f32(ob_in)
    else:
        oa_in, ob_in = oa, ob
    out, lse = mlakv.merge_states(oa_in, la, ob_in, lb)
    want_o, want_l = merge_reference(oa, la, ob, lb)
    got = ref.f32(out) if dtype == "bf16" else out
    assert ref.rel_err(got, want_o) < (4e-3 if dtype == "bf16" else 1e-6)
    fin = np.isfinite(want_l)
    np.testing.assert_allclose(lse[fin], want_l[fin], atol=1e-5, rtol=0)
    assert np.isneginf(lse[2, 3]) and (got[2, 3] == 0).all()
    assert not np.isnan(got).any()


def test_cache_descriptions():
    assert mlakv.cache_shape("bf16", 3, 64) == (3, 64, 576)
    assert mlakv.cache_shape("fp8_e4m3", 3, 64) == (3, 64, 576)
    assert mlakv.cache_shape("fp8_ds_mla", 3, 64) == (3, 64, 656)
    assert mlakv.cache_shape("dsv4", 3, 64) == (3, 37440)
    assert mlakv.cache_shape("fp8", 3, 16, block_stride=16 * 576 + 64) == (3, 16 * 576 + 64)
    c = mlakv.empty_cache("auto", 5, 32)
    assert (c.format, c.num_blocks, c.block_size, c.block_stride, c.token_bytes) == ("bf16", 5, 32, 32 * 1152, 1152)
    assert c.tensor.dtype == np.uint16 and c.capacity == 160 and c.device == "cpu"
    # A raw tensor: block_size from its shape; dsv4 needs it given.
    assert mlakv.Cache(np.zeros((2, 16, 656), np.uint8), "fp8_ds_mla").block_size == 16
    d = mlakv.Cache(np.zeros((2, 37440), np.uint8), "dsv4", 64)
    assert (d.num_blocks, d.block_stride) == (2, 37440)
    # A 1-D byte buffer: as many whole blocks as fit, or the number given.
    flat = mlakv.Cache(np.zeros(3 * 576 * 16 + 100, np.uint8), "fp8", 16, scale=1.0)
    assert flat.num_blocks == 3 and flat.block_stride == 576 * 16
    # A padded block stride works end to end.
    padded = mlakv.empty_cache("fp8", 4, 16, block_stride=16 * 576 + 64, scale=2.0)
    assert padded.block_stride == 16 * 576 + 64
    rng = np.random.default_rng(0)
    kv, pe = ref.rand_bf16(rng, 4, 512), ref.rand_bf16(rng, 4, 64)
    mlakv.write_cache(kv, pe, padded, np.array([0, 17, 40, 63], np.int64))
    back = mlakv.gather_dequant_cache(padded, np.array([[0, 1, 2, 3]], np.int32), np.array([0, 64], np.int32),
                                      out_dtype="float32")
    for t, slot in enumerate([0, 17, 40, 63]):
        np.testing.assert_array_equal(back[slot], ref.decode_mla("fp8", ref.encode_mla(
            "fp8", ref.f32(kv[t]), ref.f32(pe[t]), 2.0), 2.0))


def test_ml_dtypes_bfloat16_accepted():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(4)
    c1, c2 = mlakv.empty_cache("bf16", 2, 16), mlakv.empty_cache("bf16", 2, 16)
    kv, pe = ref.rand_bf16(rng, 3, 512), ref.rand_bf16(rng, 3, 64)
    slots = np.array([1, 5, 30], np.int64)
    mlakv.write_cache(kv, pe, c1, slots)
    mlakv.write_cache(kv.view(ml_dtypes.bfloat16), pe.view(ml_dtypes.bfloat16), c2, slots)
    np.testing.assert_array_equal(c1.tensor, c2.tensor)


def test_bf16_helpers():
    x = np.array([1.0, 1.00390625, 1.01171875, -2.5, np.inf], np.float32)
    bits = mlakv.float32_to_bf16(x)
    np.testing.assert_array_equal(bits, [0x3F80, 0x3F80, 0x3F82, 0xC020, 0x7F80])
    np.testing.assert_array_equal(mlakv.bf16_to_float32(bits)[:4], [1.0, 1.0, 1.015625, -2.5])
