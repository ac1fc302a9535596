"""Bad arguments raise ValueError (TypeError for element types) naming the argument, before
anything is written."""

from __future__ import annotations

import numpy as np
import pytest

import mlakv
import mlakv_ref as ref


@pytest.fixture
def setup():
    rng = np.random.default_rng(0)
    cache = mlakv.empty_cache("bf16", 4, 16)
    return cache, ref.rand_bf16(rng, 6, 512), ref.rand_bf16(rng, 6, 64), np.arange(6, dtype=np.int64)


def test_dtype_errors_are_type_errors(setup):
    cache, kv, pe, slots = setup
    with pytest.raises(TypeError, match="kv_c"):
        mlakv.write_cache(kv.astype(np.float64), pe, cache, slots)
    with pytest.raises(TypeError, match="slot_mapping"):
        mlakv.write_cache(kv, pe, cache, slots.astype(np.int32))
    with pytest.raises(TypeError, match="kv_c"):
        mlakv.write_cache(kv.astype(np.complex64), pe, cache, slots)  # not an mlakv type at all
    with pytest.raises(TypeError, match="block_table"):
        mlakv.gather_cache(cache, np.zeros((1, 1), np.int64), np.array([0, 1], np.int32))
    with pytest.raises(TypeError, match="dst"):  # raw gather into a type the cache does not store
        mlakv.gather_cache(cache, np.zeros((1, 1), np.int32), np.array([0, 1], np.int32),
                           np.zeros((1, 576), np.float32))
    with pytest.raises(TypeError, match="kv_c"):
        mlakv.write_cache(kv.tolist(), pe, cache, slots)
    fp8 = mlakv.empty_cache("fp8", 2, 16)
    with pytest.raises(TypeError, match="scale"):
        mlakv.write_cache(kv, pe, fp8.tensor, slots, "fp8", np.ones(1, np.float64))


def test_shape_and_stride_errors_are_value_errors(setup):
    cache, kv, pe, slots = setup
    with pytest.raises(ValueError, match="kv_c: latent"):
        mlakv.write_cache(kv[:, :500], pe, cache, slots)
    with pytest.raises(ValueError, match="kv_c: innermost stride"):
        mlakv.write_cache(np.zeros((6, 1024), np.uint16)[:, ::2], pe, cache, slots)
    with pytest.raises(ValueError, match="k_pe"):
        mlakv.write_cache(kv, pe[:3], cache, slots)
    with pytest.raises(ValueError, match="negative stride"):
        mlakv.write_cache(kv[::-1], pe, cache, slots)
    with pytest.raises(ValueError, match="q"):
        mlakv.mla_decode(np.zeros((1, 8, 576), np.uint16), cache, np.zeros((1, 1), np.int32),
                         np.ones(1, np.int32), 0.1)
    q = np.zeros((1, 1, 2, 576), np.uint16)
    with pytest.raises(ValueError, match=r"seq_lens\[0\]"):
        mlakv.mla_decode(q, cache, np.zeros((1, 1), np.int32), np.array([17], np.int32), 0.1)
    with pytest.raises(ValueError, match="softmax_scale"):
        mlakv.mla_decode(q, cache, np.zeros((1, 1), np.int32), np.array([1], np.int32), 0.0)
    with pytest.raises(ValueError, match="o_b"):
        a, la = np.zeros((2, 3, 512), np.float32), np.zeros((2, 3), np.float32)
        mlakv.merge_states(a, la, a[:1], la[:1])
    with pytest.raises(ValueError, match="out"):
        mlakv.mla_decode(q, cache, np.zeros((1, 1), np.int32), np.array([1], np.int32), 0.1,
                         out=np.zeros((1, 1, 2, 576), np.uint16))


def test_cache_errors():
    with pytest.raises(ValueError, match="kv_cache_dtype"):
        mlakv.empty_cache("int4", 2, 16)
    with pytest.raises(ValueError, match="kv_cache_dtype"):
        mlakv.Cache(np.zeros((2, 16, 576), np.uint8))  # a byte tensor needs its format named
    with pytest.raises(ValueError, match="kv_cache: a block"):
        mlakv.Cache(np.zeros((2, 16, 575), np.uint8), "fp8", scale=1.0)
    with pytest.raises(ValueError, match="block_size"):
        mlakv.Cache(np.zeros((2, 37440), np.uint8), "dsv4")
    with pytest.raises(ValueError, match="each block must be contiguous"):
        mlakv.Cache(np.zeros((2, 16, 1152), np.uint8)[:, :, ::2], "fp8", scale=1.0)
    with pytest.raises(ValueError, match="scale"):
        fp8 = mlakv.empty_cache("fp8", 2, 16)
        rng = np.random.default_rng(1)
        mlakv.write_cache(ref.rand_bf16(rng, 1, 512), ref.rand_bf16(rng, 1, 64), fp8.tensor,
                          np.zeros(1, np.int64), "fp8")  # fp8 without its scale
    with pytest.raises(ValueError, match="dsv4"):
        c = mlakv.empty_cache("dsv4", 2, 16)
        mlakv.write_cache(np.zeros((1, 512), np.uint16), np.zeros((1, 64), np.uint16), c, np.zeros(1, np.int64))
    with pytest.raises(ValueError, match="contradicts"):
        mlakv.write_cache(np.zeros((1, 512), np.uint16), np.zeros((1, 64), np.uint16), mlakv.empty_cache("bf16", 1, 16),
                          np.zeros(1, np.int64), kv_cache_dtype="fp8")


def test_nothing_written_on_error(setup):
    cache, kv, pe, slots = setup
    bad = slots.copy()
    bad[-1] = cache.capacity  # one slot past the end
    with pytest.raises(ValueError, match=r"slot_mapping\[5\]"):
        mlakv.write_cache(kv, pe, cache, bad)
    assert not cache.tensor.any()
    ro = np.zeros((6, 576), np.uint16)
    ro.flags.writeable = False
    mlakv.write_cache(kv, pe, cache, slots)
    with pytest.raises(ValueError, match="dst: read-only"):
        mlakv.gather_cache(cache, np.zeros((1, 1), np.int32), np.array([0, 6], np.int32), ro)
