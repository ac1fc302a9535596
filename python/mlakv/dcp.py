"""Decode context parallelism (SPEC §4): which rank stores a token, where, and how many.

owner / local_index / global_position / local_length work on Python ints and elementwise on
NumPy, PyTorch or CuPy integer arrays; slot_mapping runs the library's op (on the arrays'
device)."""

from __future__ import annotations

import numbers

from . import ops as _ops


def _check(world, interleave, rank=None):
    if int(world) < 1:
        raise ValueError(f"world: {world}, expected >= 1")
    if int(interleave) < 1:
        raise ValueError(f"interleave: {interleave}, expected >= 1")
    if rank is not None and not 0 <= int(rank) < int(world):
        raise ValueError(f"rank: {rank}, expected in [0, {world})")


def owner(t, world: int, interleave: int = 1):
    """Rank that stores global position t: (t // interleave) % world."""
    _check(world, interleave)
    return (t // interleave) % world


def local_index(t, world: int, interleave: int = 1):
    """Index of position t within its owner's shard."""
    _check(world, interleave)
    return (t // (interleave * world)) * interleave + t % interleave


def global_position(j, rank: int, world: int, interleave: int = 1):
    """Global position of local index j on `rank` (the inverse of local_index)."""
    _check(world, interleave, rank)
    return (j // interleave) * interleave * world + rank * interleave + j % interleave


def local_length(seq_len, rank: int, world: int, interleave: int = 1):
    """Tokens of a seq_len-token sequence stored on `rank` (0 when seq_len <= rank * interleave)."""
    _check(world, interleave, rank)
    base = (seq_len // (interleave * world)) * interleave
    extra = seq_len - base * world - rank * interleave
    if isinstance(extra, numbers.Integral):
        extra = min(max(int(extra), 0), interleave)
    else:
        extra = extra.clip(0, interleave)
    return base + extra


def slot_mapping(positions, token_to_req, block_table, block_size: int, *, world: int, rank: int,
                 interleave: int = 1, out=None, stream=None):
    """This rank's slot_mapping (int64 [T]) for the cache writes of one step: token t of request
    token_to_req[t] (int32 [T]) at global position positions[t] (int64 [T]) goes to
    block_table[req][j // block_size] * block_size + j % block_size, j its local index, when this
    rank owns it, else -1. Pass the result to write_cache / dsv4_write on this rank."""
    return _ops._dcp_slot_mapping(positions, token_to_req, block_table, block_size, world, rank, interleave, out,
                                  stream)
