"""mlakv: Multi-head Latent Attention over a paged, FP8-capable KV cache with decode context
parallelism, from NumPy, PyTorch and CuPy (see docs/python.md).

Arrays cross into C++ through DLPack without a copy. CPU arrays run on the CPU reference backend,
CUDA arrays on the GPU kernels with the framework's current stream. NumPy has no bf16: bf16
arguments and outputs are uint16 arrays holding the bits (ml_dtypes.bfloat16 arrays are accepted
too); `float32_to_bf16` and `bf16_to_float32` convert. Bad arguments raise ValueError (TypeError
for element types) with a message that names the argument.

With PyTorch installed the ops are also torch.ops.mlakv.* custom ops (set MLAKV_NO_TORCH=1 to
skip importing torch)."""

from __future__ import annotations

import importlib.util as _ilu
import os as _os

# PyTorch first, when it is used: torch loads its own CUDA libraries (NCCL among them), and the
# extension, loaded after, binds to those same copies instead of pulling in the system's first
# (two NCCL builds under one soname in one process is what torch cannot survive).
if _os.environ.get("MLAKV_NO_TORCH") != "1" and _ilu.find_spec("torch") is not None:
    try:
        import torch as _torch  # noqa: F401
    except Exception:  # a broken torch must not take the NumPy path down; _register_torch_ops warns
        pass

from . import _mlakv
from . import dcp, ops
from ._cache import FORMATS, Cache, cache_shape, canonical_format, empty_cache, storage_dtype
from .ops import (concat_and_cache_mla, cp_gather_cache, dequantize_and_gather_k_cache, dsv4_dequant_gather,
                  dsv4_write, gather_and_maybe_dequant_cache, gather_cache, gather_dequant_cache, merge_states,
                  mla_decode, mla_decode_workspace_size, quantize_and_insert_k_cache, write_cache)

__version__ = _mlakv.__version__

__all__ = [
    "FORMATS", "Cache", "cache_shape", "canonical_format", "empty_cache", "storage_dtype",
    "write_cache", "concat_and_cache_mla", "gather_cache", "cp_gather_cache", "gather_dequant_cache",
    "gather_and_maybe_dequant_cache", "dsv4_write", "quantize_and_insert_k_cache", "dsv4_dequant_gather",
    "dequantize_and_gather_k_cache", "mla_decode", "mla_decode_workspace_size", "merge_states", "dcp",
    "built_with_cuda", "cuda_device_count", "float32_to_bf16", "bf16_to_float32", "torch_ops_registered",
]


def built_with_cuda() -> bool:
    """True when this build carries the CUDA backend."""
    return _mlakv.built_with_cuda()


def cuda_device_count() -> int:
    """CUDA devices visible to mlakv (0 without the CUDA backend)."""
    return _mlakv.cuda_device_count()


def float32_to_bf16(x):
    """NumPy float32 -> bf16 bits (uint16), rounding to nearest even as the library does."""
    import numpy as np

    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(nan, ((u >> 16) | 0x40).astype(np.uint16), r)


def bf16_to_float32(bits):
    """bf16 bits (NumPy uint16, or an ml_dtypes.bfloat16 array) -> float32."""
    import numpy as np

    b = np.asarray(bits)
    if b.dtype.name == "bfloat16":
        b = b.view(np.uint16)
    return (b.astype(np.uint32) << 16).view(np.float32)


def _register_torch_ops() -> bool:
    if _os.environ.get("MLAKV_NO_TORCH") == "1" or _ilu.find_spec("torch") is None:
        return False
    try:
        from . import _torch_ops
    except Exception as e:  # a broken torch installation must not take the NumPy path down with it
        import warnings

        warnings.warn(f"mlakv: torch is installed but the torch.ops.mlakv custom ops could not be registered: {e}")
        return False

    ops._torch_ops = _torch_ops
    return True


def torch_ops_registered() -> bool:
    """Whether torch.ops.mlakv.* exist (PyTorch importable and not disabled)."""
    return ops._torch_ops is not None


_register_torch_ops()
