"""The public ops with vLLM's argument names. Each takes NumPy, PyTorch or CuPy arrays (CPU arrays
run on the CPU reference backend, CUDA arrays on the GPU kernels, on the framework's current
stream unless `stream=` says otherwise), allocates missing outputs beside its inputs and returns
them. PyTorch tensors go through torch.ops.mlakv.* so that torch.compile and CUDA graphs see the
op; NumPy and CuPy arrays call the extension directly.

A cache is either a `Cache` or a raw tensor with `kv_cache_dtype`, `scale` and `block_size`
given beside it (vLLM's calling convention)."""

from __future__ import annotations

from . import _arrays, _impl
from ._arrays import BF16, F32, I64, U8
from ._cache import Cache, canonical_format

_torch_ops = None  # the _torch_ops module once registered (see __init__)


def _torch_path(stream, *xs) -> bool:
    """torch.ops.mlakv.* when every array is a torch tensor; a mix of frameworks (or an explicit
    stream) goes straight to the extension, which takes any DLPack array."""
    if _torch_ops is None or stream is not None:
        return False
    tensor = _torch_ops.torch.Tensor
    seen = False
    for x in xs:  # a plain loop: torch.compile traces it
        if x is None:
            continue
        if not isinstance(x, tensor):
            return False
        seen = True
    return seen


def _as_cache(kv_cache, kv_cache_dtype, scale, block_size) -> Cache:
    """A Cache for either calling convention; what is given beside a Cache must agree with it,
    except `scale`, which replaces the Cache's own for this call."""
    if isinstance(kv_cache, Cache):
        if kv_cache_dtype is not None and canonical_format(kv_cache_dtype) != kv_cache.format:
            raise ValueError(f"kv_cache_dtype: {kv_cache_dtype!r} contradicts the Cache's format {kv_cache.format!r}")
        if block_size is not None and int(block_size) != kv_cache.block_size:
            raise ValueError(f"block_size: {block_size} contradicts the Cache's block_size {kv_cache.block_size}")
        if scale is None:
            return kv_cache
        c = Cache.__new__(Cache)
        for slot in Cache.__slots__:
            setattr(c, slot, getattr(kv_cache, slot))
        c.scale = scale if hasattr(scale, "shape") else _arrays.scalar_f32(kv_cache.tensor, float(scale))
        return c
    return Cache(kv_cache, kv_cache_dtype, block_size, scale)


def _cache_args(c: Cache):
    return c.tensor, c.format, c.scale, c.block_size, c._nb_arg, c._bs_arg


def write_cache(kv_c, k_pe, kv_cache, slot_mapping, kv_cache_dtype=None, scale=None, *, block_size=None, stream=None):
    """Op 1 (vLLM concat_and_cache_mla): token t of kv_c [T', 512] and k_pe [T', 64] (bf16 or float32,
    rows may be padded) goes to slot slot_mapping[t] (int64 [T]); negative slots are skipped.
    Formats bf16, fp8 (needs `scale`) and fp8_ds_mla. Returns the cache tensor."""
    c = _as_cache(kv_cache, kv_cache_dtype, scale, block_size)
    t, fmt, s, bs, nb, stride = _cache_args(c)
    if _torch_path(stream, kv_c, k_pe, t, slot_mapping, s):
        import torch

        torch.ops.mlakv.write_cache(kv_c, k_pe, t, slot_mapping, fmt, s, bs, nb, stride)
    else:
        _impl.write_cache(kv_c, k_pe, t, slot_mapping, fmt, s, bs, nb, stride, stream)
    return t


concat_and_cache_mla = write_cache


def _shape(x, name) -> tuple:
    if not hasattr(x, "shape"):
        raise TypeError(f"{name}: expected a NumPy, PyTorch or CuPy array, got {type(x).__name__}")
    return tuple(x.shape)


def _rows(cu_seq_lens, num_tokens):
    if num_tokens is not None:
        return int(num_tokens)
    # Reading the last offset synchronizes with the device for GPU arrays: pass num_tokens there.
    return int(cu_seq_lens[-1])


def gather_cache(kv_cache, block_table, cu_seq_lens, dst=None, *, seq_starts=None, token_to_seq=None,
                 num_tokens=None, kv_cache_dtype=None, scale=None, block_size=None, stream=None):
    """Op 2 (vLLM cp_gather_cache): the stored bytes of each sequence's rows, packed. Sequence b fills
    rows [cu_seq_lens[b], cu_seq_lens[b+1]) from logical positions seq_starts[b] + p (int32 arrays).
    `dst` is [rows, 576] bf16 for a bf16 cache, else [rows, token_bytes] uint8 (fp8 may also be
    float8_e4m3fn); allocated when omitted (rows = num_tokens, or cu_seq_lens[-1]). A raw fp8
    tensor needs its `scale` here too (the cache description is checked whole)."""
    c = _as_cache(kv_cache, kv_cache_dtype, scale, block_size)
    t, fmt, s, bs, nb, stride = _cache_args(c)
    if dst is None:
        rows = _rows(cu_seq_lens, num_tokens)
        dst = (_arrays.empty_like_fw(t, (rows, 576), BF16) if fmt == "bf16"
               else _arrays.empty_like_fw(t, (rows, c.token_bytes), U8))
    if _torch_path(stream, t, block_table, cu_seq_lens, dst, s, seq_starts, token_to_seq):
        import torch

        torch.ops.mlakv.gather_cache(t, block_table, cu_seq_lens, dst, fmt, s, bs, nb, stride, seq_starts,
                                     token_to_seq)
    else:
        _impl.gather(False, t, block_table, cu_seq_lens, dst, fmt, s, bs, nb, stride, seq_starts, token_to_seq,
                     stream)
    return dst


cp_gather_cache = gather_cache


def gather_dequant_cache(kv_cache, block_table, cu_seq_lens, dst=None, *, seq_starts=None, token_to_seq=None,
                         num_tokens=None, kv_cache_dtype=None, scale=None, block_size=None, out_dtype="bf16",
                         stream=None):
    """Op 3 (vLLM gather_and_maybe_dequant_cache): like gather_cache, writing dst [rows, 576] bf16 or
    float32 (512 wide for dsv4), dequantizing fp8 (per-tensor `scale`) and fp8_ds_mla on the fly."""
    c = _as_cache(kv_cache, kv_cache_dtype, scale, block_size)
    t, fmt, s, bs, nb, stride = _cache_args(c)
    if dst is None:
        if out_dtype not in ("bf16", "bfloat16", "f32", "float32"):
            raise TypeError(f"out_dtype: {out_dtype!r}, expected 'bf16' or 'float32'")
        dt = BF16 if out_dtype.startswith("bf") else F32
        dst = _arrays.empty_like_fw(t, (_rows(cu_seq_lens, num_tokens), c.row_width), dt)
    if _torch_path(stream, t, block_table, cu_seq_lens, dst, s, seq_starts, token_to_seq):
        import torch

        torch.ops.mlakv.gather_dequant_cache(t, block_table, cu_seq_lens, dst, fmt, s, bs, nb, stride, seq_starts,
                                             token_to_seq)
    else:
        _impl.gather(True, t, block_table, cu_seq_lens, dst, fmt, s, bs, nb, stride, seq_starts, token_to_seq, stream)
    return dst


gather_and_maybe_dequant_cache = gather_dequant_cache


def dsv4_write(k, kv_cache, slot_mapping, *, block_size=None, stream=None):
    """Op 4 (vLLM quantize_and_insert_k_cache): k [T', 512] bf16 into a dsv4 cache at slot_mapping
    (int64 [T]; negative slots skipped). Returns the cache tensor."""
    c = _as_cache(kv_cache, "dsv4", None, block_size)
    t, _, _, bs, nb, stride = _cache_args(c)
    if _torch_path(stream, k, t, slot_mapping):
        import torch

        torch.ops.mlakv.dsv4_write(k, t, slot_mapping, bs, nb, stride)
    else:
        _impl.dsv4_write(k, t, slot_mapping, bs, nb, stride, stream)
    return t


quantize_and_insert_k_cache = dsv4_write


def dsv4_dequant_gather(kv_cache, block_table, seq_lens, out=None, *, gather_lens=None, offset=0, max_rows=None,
                        block_size=None, stream=None):
    """Op 5 (vLLM dequantize_and_gather_k_cache): request r's last gather_lens[r] tokens (all
    seq_lens[r] when absent) dequantized into out[r, offset + i] (out [R, max_rows, 512] bf16; other
    rows untouched). When `out` is omitted a zeroed one of `max_rows` rows is allocated."""
    c = _as_cache(kv_cache, "dsv4", None, block_size)
    t, _, _, bs, nb, stride = _cache_args(c)
    if out is None:
        if max_rows is None:
            raise ValueError("max_rows: required when out is not given")
        out = _arrays.empty_like_fw(t, (_shape(seq_lens, "seq_lens")[0], int(max_rows), 512), BF16, zero=True)
    if _torch_path(stream, t, block_table, seq_lens, out, gather_lens):
        import torch

        torch.ops.mlakv.dsv4_dequant_gather(t, block_table, seq_lens, out, bs, nb, stride, gather_lens, int(offset))
    else:
        _impl.dsv4_dequant_gather(t, block_table, seq_lens, out, bs, nb, stride, gather_lens, offset, stream)
    return out


dequantize_and_gather_k_cache = dsv4_dequant_gather


def mla_decode_workspace_size(batch: int, s_q: int, heads: int, device="cpu") -> int:
    """Bytes of scratch memory mla_decode needs for (batch, s_q, heads) on `device` ('cpu', 'cuda',
    'cuda:N', a torch.device or an index); 0 on the CPU."""
    from . import _mlakv as _C

    if isinstance(device, int):
        kind, idx = "cuda", device
    else:
        kind, _, rest = str(device).partition(":")
        idx = int(rest) if rest else 0
    return _C.mla_decode_workspace_size(int(batch), int(s_q), int(heads), kind, idx)


def mla_decode(q, kv_cache, block_table, seq_lens, softmax_scale, causal=True, *, kv_cache_dtype=None, scale=None,
               block_size=None, q_scale=None, out=None, lse=None, out_dtype="bf16", workspace=None,
               dcp_world_size=1, dcp_rank=0, dcp_interleave=1, stream=None):
    """Op 6: absorbed MLA decode. q [B, s_q, H, 576] bf16 (or e4m3 with `q_scale`, a float32 [1]
    tensor or a number), block_table [B, max_blocks] int32, seq_lens [B] int32 -> (out
    [B, s_q, H, 512] bf16 or float32, lse [B, s_q, H] float32, natural log). A request with no
    visible token gives out 0 and lse -inf. `workspace` (uint8, mla_decode_workspace_size bytes)
    is allocated beside q when omitted. With dcp_world_size > 1, seq_lens are global lengths and
    the op attends over this rank's shard of the cache."""
    c = _as_cache(kv_cache, kv_cache_dtype, scale, block_size)
    t, fmt, s, bs, nb, stride = _cache_args(c)
    shape = _shape(q, "q")
    if len(shape) != 4:
        raise ValueError(f"q: shape {shape}, expected [batch, s_q, heads, 576]")
    if out is None:
        if out_dtype not in ("bf16", "bfloat16", "f32", "float32"):
            raise TypeError(f"out_dtype: {out_dtype!r}, expected 'bf16' or 'float32'")
        out = _arrays.empty_like_fw(q, shape[:3] + (512,), BF16 if out_dtype.startswith("bf") else F32)
    if lse is None:
        lse = _arrays.empty_like_fw(q, shape[:3], F32)
    if q_scale is not None and not hasattr(q_scale, "shape"):
        q_scale = _arrays.scalar_f32(q, float(q_scale))
    if _torch_path(stream, q, t, block_table, seq_lens, out, lse, s, q_scale, workspace):
        import torch

        torch.ops.mlakv.mla_decode(q, t, block_table, seq_lens, out, lse, fmt, s, bs, nb, stride,
                                   float(softmax_scale), bool(causal), q_scale, workspace, int(dcp_world_size),
                                   int(dcp_rank), int(dcp_interleave))
    else:
        _impl.mla_decode(q, t, block_table, seq_lens, out, lse, fmt, s, bs, nb, stride, softmax_scale, causal,
                         q_scale, workspace, dcp_world_size, dcp_rank, dcp_interleave, stream)
    return out, lse


def merge_states(o_a, lse_a, o_b, lse_b, *, out=None, out_lse=None, stream=None):
    """Op 7 (vLLM merge_attn_states): two partial attentions o [N, H, D] (bf16 or float32) with
    lse [N, H] float32 over disjoint tokens -> (out, out_lse), merged exactly through their LSEs.
    Empty states (-inf, +inf or NaN lse) contribute nothing; both empty give 0 and -inf."""
    if out is None:
        out = _arrays.empty_like_fw(o_a, _shape(o_a, "o_a"), BF16 if _arrays.is_bf16(o_a) else F32)
    if out_lse is None:
        out_lse = _arrays.empty_like_fw(o_a, _shape(lse_a, "lse_a"), F32)
    if _torch_path(stream, o_a, lse_a, o_b, lse_b, out, out_lse):
        import torch

        torch.ops.mlakv.merge_states(o_a, lse_a, o_b, lse_b, out, out_lse)
    else:
        _impl.merge_states(o_a, lse_a, o_b, lse_b, out, out_lse, stream)
    return out, out_lse


def _dcp_slot_mapping(positions, token_to_req, block_table, block_size, world, rank, interleave, out, stream):
    if out is None:
        out = _arrays.empty_like_fw(positions, _shape(positions, "positions")[:1], I64)
    if _torch_path(stream, positions, token_to_req, block_table, out):
        import torch

        torch.ops.mlakv.dcp_slot_mapping(positions, token_to_req, block_table, out, int(block_size), int(world),
                                         int(rank), int(interleave))
    else:
        _impl.dcp_slot_mapping(positions, token_to_req, block_table, out, block_size, world, rank, interleave, stream)
    return out
