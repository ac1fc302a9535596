"""The ops with flat arguments (a cache is its tensor, format, block size, block count, stride and
scale): the bodies of both the torch custom ops and the plain NumPy / CuPy path. Outputs are
given, never allocated here, except mla_decode's scratch workspace."""

from __future__ import annotations

from . import _arrays
from . import _mlakv as _C
from ._arrays import as_arg


def _cache(kv_cache, fmt, block_size, num_blocks, block_stride, scale):
    return _C.CacheView(as_arg(kv_cache, "kv_cache"), fmt, int(block_size), int(num_blocks), int(block_stride),
                        as_arg(scale, "scale"))


def write_cache(kv_c, k_pe, kv_cache, slot_mapping, fmt, scale, block_size, num_blocks, block_stride, stream=None):
    view = _cache(kv_cache, fmt, block_size, num_blocks, block_stride, scale)
    _C.write_cache(as_arg(kv_c, "kv_c"), as_arg(k_pe, "k_pe"), as_arg(slot_mapping, "slot_mapping"), view,
                   _arrays.stream_handle(kv_c, stream))


def gather(dequant, kv_cache, block_table, cu_seq_lens, dst, fmt, scale, block_size, num_blocks, block_stride,
           seq_starts, token_to_seq, stream=None):
    view = _cache(kv_cache, fmt, block_size, num_blocks, block_stride, scale)
    fn = _C.gather_dequant_cache if dequant else _C.gather_cache
    fn(view, as_arg(block_table, "block_table"), as_arg(cu_seq_lens, "cu_seq_lens"), as_arg(dst, "dst", out=True),
       as_arg(seq_starts, "seq_starts"), as_arg(token_to_seq, "token_to_seq"), _arrays.stream_handle(dst, stream))


def dsv4_write(k, kv_cache, slot_mapping, block_size, num_blocks, block_stride, stream=None):
    view = _cache(kv_cache, "dsv4", block_size, num_blocks, block_stride, None)
    _C.dsv4_write(as_arg(k, "k"), as_arg(slot_mapping, "slot_mapping"), view, _arrays.stream_handle(k, stream))


def dsv4_dequant_gather(kv_cache, block_table, seq_lens, out, block_size, num_blocks, block_stride, gather_lens, offset,
                        stream=None):
    view = _cache(kv_cache, "dsv4", block_size, num_blocks, block_stride, None)
    _C.dsv4_dequant_gather(view, as_arg(block_table, "block_table"), as_arg(seq_lens, "seq_lens"),
                           as_arg(out, "out", out=True), as_arg(gather_lens, "gather_lens"), int(offset),
                           _arrays.stream_handle(out, stream))


def workspace_size(q) -> int:
    shape = tuple(q.shape)
    kind, idx = _arrays.device_of(q)
    return _C.mla_decode_workspace_size(int(shape[0]), int(shape[1]), int(shape[2]), kind, idx)


def mla_decode(q, kv_cache, block_table, seq_lens, out, lse, fmt, scale, block_size, num_blocks, block_stride,
               softmax_scale, causal, q_scale, workspace, dcp_world_size, dcp_rank, dcp_interleave, stream=None):
    view = _cache(kv_cache, fmt, block_size, num_blocks, block_stride, scale)
    if workspace is None and len(q.shape) == 4:
        n = workspace_size(q)
        if n:
            workspace = _arrays.empty_like_fw(q, (n,), _arrays.U8)
    _C.mla_decode(as_arg(q, "q"), view, as_arg(block_table, "block_table"), as_arg(seq_lens, "seq_lens"),
                  as_arg(out, "out", out=True), as_arg(lse, "lse", out=True), float(softmax_scale), bool(causal),
                  as_arg(q_scale, "q_scale"), as_arg(workspace, "workspace"), int(dcp_world_size), int(dcp_rank),
                  int(dcp_interleave), _arrays.stream_handle(q, stream))


def merge_states(o_a, lse_a, o_b, lse_b, out, out_lse, stream=None):
    _C.merge_states(as_arg(o_a, "o_a"), as_arg(lse_a, "lse_a"), as_arg(o_b, "o_b"), as_arg(lse_b, "lse_b"),
                    as_arg(out, "out", out=True), as_arg(out_lse, "out_lse", out=True),
                    _arrays.stream_handle(o_a, stream))


def dcp_slot_mapping(positions, token_to_req, block_table, out, block_size, world, rank, interleave, stream=None):
    _C.dcp_slot_mapping(as_arg(positions, "positions"), as_arg(token_to_req, "token_to_req"),
                        as_arg(block_table, "block_table"), int(block_size), int(world), int(rank), int(interleave),
                        as_arg(out, "slot_mapping", out=True), _arrays.stream_handle(positions, stream))
