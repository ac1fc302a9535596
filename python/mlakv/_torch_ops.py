"""torch.ops.mlakv.*: the ops as torch.library custom ops, so that torch.compile traces them as
opaque mutating calls (with fake implementations for shape propagation) and CUDA-graph capture
records their kernels on the capturing stream.

Every op mutates its outputs in place and returns nothing, like vLLM's _C ops; a cache is passed
as (kv_cache, kv_cache_dtype, scale, block_size, num_blocks, block_stride) with num_blocks = -1
and block_stride = 0 meaning "from the tensor's shape and strides"."""

from __future__ import annotations

from typing import Optional

import torch

from . import _impl

Tensor = torch.Tensor


@torch.library.custom_op("mlakv::write_cache", mutates_args=("kv_cache",))
def write_cache(kv_c: Tensor, k_pe: Tensor, kv_cache: Tensor, slot_mapping: Tensor, kv_cache_dtype: str,
                scale: Optional[Tensor], block_size: int, num_blocks: int, block_stride: int) -> None:
    _impl.write_cache(kv_c, k_pe, kv_cache, slot_mapping, kv_cache_dtype, scale, block_size, num_blocks, block_stride)


@write_cache.register_fake
def _(kv_c, k_pe, kv_cache, slot_mapping, kv_cache_dtype, scale, block_size, num_blocks, block_stride):
    return None


@torch.library.custom_op("mlakv::gather_cache", mutates_args=("dst",))
def gather_cache(kv_cache: Tensor, block_table: Tensor, cu_seq_lens: Tensor, dst: Tensor, kv_cache_dtype: str,
                 scale: Optional[Tensor], block_size: int, num_blocks: int, block_stride: int,
                 seq_starts: Optional[Tensor], token_to_seq: Optional[Tensor]) -> None:
    _impl.gather(False, kv_cache, block_table, cu_seq_lens, dst, kv_cache_dtype, scale, block_size, num_blocks,
                 block_stride, seq_starts, token_to_seq)


@gather_cache.register_fake
def _(kv_cache, block_table, cu_seq_lens, dst, kv_cache_dtype, scale, block_size, num_blocks, block_stride,
      seq_starts, token_to_seq):
    return None


@torch.library.custom_op("mlakv::gather_dequant_cache", mutates_args=("dst",))
def gather_dequant_cache(kv_cache: Tensor, block_table: Tensor, cu_seq_lens: Tensor, dst: Tensor,
                         kv_cache_dtype: str, scale: Optional[Tensor], block_size: int, num_blocks: int,
                         block_stride: int, seq_starts: Optional[Tensor], token_to_seq: Optional[Tensor]) -> None:
    _impl.gather(True, kv_cache, block_table, cu_seq_lens, dst, kv_cache_dtype, scale, block_size, num_blocks,
                 block_stride, seq_starts, token_to_seq)


@gather_dequant_cache.register_fake
def _(kv_cache, block_table, cu_seq_lens, dst, kv_cache_dtype, scale, block_size, num_blocks, block_stride,
      seq_starts, token_to_seq):
    return None


@torch.library.custom_op("mlakv::dsv4_write", mutates_args=("kv_cache",))
def dsv4_write(k: Tensor, kv_cache: Tensor, slot_mapping: Tensor, block_size: int, num_blocks: int,
               block_stride: int) -> None:
    _impl.dsv4_write(k, kv_cache, slot_mapping, block_size, num_blocks, block_stride)


@dsv4_write.register_fake
def _(k, kv_cache, slot_mapping, block_size, num_blocks, block_stride):
    return None


@torch.library.custom_op("mlakv::dsv4_dequant_gather", mutates_args=("out",))
def dsv4_dequant_gather(kv_cache: Tensor, block_table: Tensor, seq_lens: Tensor, out: Tensor, block_size: int,
                        num_blocks: int, block_stride: int, gather_lens: Optional[Tensor], offset: int) -> None:
    _impl.dsv4_dequant_gather(kv_cache, block_table, seq_lens, out, block_size, num_blocks, block_stride, gather_lens,
                              offset)


@dsv4_dequant_gather.register_fake
def _(kv_cache, block_table, seq_lens, out, block_size, num_blocks, block_stride, gather_lens, offset):
    return None


@torch.library.custom_op("mlakv::mla_decode", mutates_args=("out", "lse"))
def mla_decode(q: Tensor, kv_cache: Tensor, block_table: Tensor, seq_lens: Tensor, out: Tensor, lse: Tensor,
               kv_cache_dtype: str, scale: Optional[Tensor], block_size: int, num_blocks: int, block_stride: int,
               softmax_scale: float, causal: bool, q_scale: Optional[Tensor], workspace: Optional[Tensor],
               dcp_world_size: int, dcp_rank: int, dcp_interleave: int) -> None:
    # Without a workspace one is taken from torch's caching allocator: inside a CUDA-graph capture
    # that is the graph's private pool, so replays reuse it.
    _impl.mla_decode(q, kv_cache, block_table, seq_lens, out, lse, kv_cache_dtype, scale, block_size, num_blocks,
                     block_stride, softmax_scale, causal, q_scale, workspace, dcp_world_size, dcp_rank,
                     dcp_interleave)


@mla_decode.register_fake
def _(q, kv_cache, block_table, seq_lens, out, lse, kv_cache_dtype, scale, block_size, num_blocks, block_stride,
      softmax_scale, causal, q_scale, workspace, dcp_world_size, dcp_rank, dcp_interleave):
    return None


@torch.library.custom_op("mlakv::merge_states", mutates_args=("out", "out_lse"))
def merge_states(o_a: Tensor, lse_a: Tensor, o_b: Tensor, lse_b: Tensor, out: Tensor, out_lse: Tensor) -> None:
    _impl.merge_states(o_a, lse_a, o_b, lse_b, out, out_lse)


@merge_states.register_fake
def _(o_a, lse_a, o_b, lse_b, out, out_lse):
    return None


@torch.library.custom_op("mlakv::dcp_slot_mapping", mutates_args=("slot_mapping",))
def dcp_slot_mapping(positions: Tensor, token_to_req: Tensor, block_table: Tensor, slot_mapping: Tensor,
                     block_size: int, world: int, rank: int, interleave: int) -> None:
    _impl.dcp_slot_mapping(positions, token_to_req, block_table, slot_mapping, block_size, world, rank, interleave)


@dcp_slot_mapping.register_fake
def _(positions, token_to_req, block_table, slot_mapping, block_size, world, rank, interleave):
    return None
