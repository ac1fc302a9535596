"""DCP helpers and a sharded decode on CPU ranks: each rank writes the tokens it owns through
dcp.slot_mapping, decodes its shard, and merge_states puts the partial results together; the
result must equal one rank over the whole cache."""

from __future__ import annotations

import numpy as np
import pytest

import mlakv
import mlakv_ref as ref
from mlakv import dcp


@pytest.mark.parametrize("world,interleave", [(1, 1), (2, 1), (3, 2), (4, 4)])
def test_owner_local_index_length(world, interleave):
    L = 97
    counts = [0] * world
    for t in range(L):
        r = dcp.owner(t, world, interleave)
        assert r == (t // interleave) % world
        j = dcp.local_index(t, world, interleave)
        assert j == counts[r]  # each rank's positions are numbered in order
        assert dcp.global_position(j, r, world, interleave) == t
        counts[r] += 1
    for r in range(world):
        for n in range(L + 1):
            assert dcp.local_length(n, r, world, interleave) == sum(
                dcp.owner(t, world, interleave) == r for t in range(n))
    # Elementwise on arrays.
    t = np.arange(L)
    np.testing.assert_array_equal(dcp.owner(t, world, interleave), [dcp.owner(int(x), world, interleave) for x in t])
    np.testing.assert_array_equal(dcp.local_length(t, world - 1, world, interleave),
                                  [dcp.local_length(int(x), world - 1, world, interleave) for x in t])


def test_dcp_argument_checks():
    with pytest.raises(ValueError, match="world"):
        dcp.owner(3, 0)
    with pytest.raises(ValueError, match="rank"):
        dcp.local_length(3, 2, 2)
    pos = np.arange(4, dtype=np.int64)
    req = np.zeros(4, np.int32)
    table = np.zeros((1, 2), np.int32)
    with pytest.raises(ValueError, match="interleave"):
        dcp.slot_mapping(pos, req, table, 16, world=2, rank=0, interleave=3)  # 16 % 3 != 0
    with pytest.raises(TypeError, match="positions"):
        dcp.slot_mapping(pos.astype(np.int32), req, table, 16, world=2, rank=0)


def test_slot_mapping_matches_definition():
    rng = np.random.default_rng(0)
    world, interleave, bs = 3, 2, 8
    table = rng.permutation(40)[:4 * 5].reshape(4, 5).astype(np.int32)
    positions = rng.integers(0, 100, size=30).astype(np.int64)
    token_to_req = rng.integers(0, 4, size=30).astype(np.int32)
    positions[3] = -1  # padding
    for rank in range(world):
        got = dcp.slot_mapping(positions, token_to_req, table, bs, world=world, rank=rank, interleave=interleave)
        for t in range(30):
            p, r = int(positions[t]), int(token_to_req[t])
            if p < 0 or dcp.owner(p, world, interleave) != rank:
                assert got[t] == -1
            else:
                j = dcp.local_index(p, world, interleave)
                assert got[t] == table[r, j // bs] * bs + j % bs


@pytest.mark.parametrize("fmt", ["bf16", "fp8", "fp8_ds_mla"])
@pytest.mark.parametrize("world,interleave", [(2, 1), (3, 4)])
def test_sharded_decode_equals_single_rank(fmt, world, interleave):
    rng = np.random.default_rng(world * 10 + interleave)
    bs, H, B, s_q = 16, 4, 3, 2
    seq_lens = np.array([50, 3, 0], np.int32)
    max_blocks = 4
    nb = B * max_blocks
    table = rng.permutation(nb).reshape(B, max_blocks).astype(np.int32)
    # All tokens of all requests, at their global positions.
    positions = np.concatenate([np.arange(L) for L in seq_lens]).astype(np.int64)
    token_to_req = np.repeat(np.arange(B), seq_lens).astype(np.int32)
    kv, pe = ref.rand_bf16(rng, len(positions), 512), ref.rand_bf16(rng, len(positions), 64)
    q = ref.rand_bf16(rng, B, s_q, H, 576)
    sm = 0.07

    single = mlakv.empty_cache(fmt, nb, bs, scale=0.5 if fmt == "fp8" else None)
    slots = np.array([table[r, p // bs] * bs + p % bs for p, r in zip(positions, token_to_req)], np.int64)
    mlakv.write_cache(kv, pe, single, slots)
    want_o, want_l = mlakv.mla_decode(q, single, table, seq_lens, sm, out_dtype="float32")

    out = lse = None
    for rank in range(world):
        shard = mlakv.empty_cache(fmt, nb, bs, scale=0.5 if fmt == "fp8" else None)
        sm_r = dcp.slot_mapping(positions, token_to_req, table, bs, world=world, rank=rank, interleave=interleave)
        mlakv.write_cache(kv, pe, shard, sm_r)
        o_r, l_r = mlakv.mla_decode(q, shard, table, seq_lens, sm, out_dtype="float32", dcp_world_size=world,
                                    dcp_rank=rank, dcp_interleave=interleave)
        o_r, l_r = o_r.reshape(B * s_q, H, 512), l_r.reshape(B * s_q, H)
        out, lse = (o_r, l_r) if out is None else mlakv.merge_states(out, lse, o_r, l_r)
    assert ref.rel_err(out.reshape(want_o.shape), want_o) < 1e-5
    fin = np.isfinite(want_l)
    np.testing.assert_allclose(lse.reshape(want_l.shape)[fin], want_l[fin], atol=1e-5, rtol=0)
    assert np.isneginf(lse.reshape(want_l.shape)[~fin]).all()
