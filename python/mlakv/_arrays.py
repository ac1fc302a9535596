"""Framework plumbing: which library an array comes from, how it crosses into C++, which CUDA
stream it runs on, and how outputs are allocated beside it. NumPy, PyTorch and CuPy are handled
by name; anything else that speaks DLPack goes through as it is."""

from __future__ import annotations

import numbers
import sys

# Element types the ops talk about, as the short names mlakv uses.
BF16, F32, U8, I32, I64 = "bf16", "f32", "u8", "i32", "i64"


def framework(x) -> str:
    """'torch', 'cupy', 'numpy' or 'other' (by the array type's module, so that nothing is imported)."""
    mod = type(x).__module__ or ""
    if mod.startswith("torch"):
        return "torch"
    if mod.startswith("cupy"):
        return "cupy"
    if mod.startswith("numpy"):
        return "numpy"
    return "other"


def is_torch(x) -> bool:
    return framework(x) == "torch"


def as_arg(x, name: str, *, out: bool = False):
    """The array as the extension takes it, or None. Element types DLPack cannot carry everywhere
    travel as their bits: bf16 as uint16 and float8_e4m3fn as uint8 (the extension maps them back
    where the argument expects them)."""
    if x is None:
        return None
    fw = framework(x)
    if fw == "torch":
        import torch

        t = x.detach()
        if t.dtype == torch.float8_e4m3fn:
            t = t.view(torch.uint8)
        elif "float8" in str(t.dtype):
            raise TypeError(f"{name}: dtype {t.dtype} is not supported, expected torch.float8_e4m3fn for fp8 values")
        return t
    if fw == "numpy":
        if not hasattr(x, "dtype") or not hasattr(x, "shape"):
            raise TypeError(f"{name}: expected an array, got {type(x).__name__}")
        if out and not x.flags.writeable:
            raise ValueError(f"{name}: read-only array, expected a writable output")
        dname = x.dtype.name
        if dname == "bfloat16":  # ml_dtypes
            import numpy as np

            return x.view(np.uint16)
        if dname == "float8_e4m3fn":
            import numpy as np

            return x.view(np.uint8)
        return x
    if fw == "cupy" or hasattr(x, "__dlpack__"):
        return x
    raise TypeError(f"{name}: expected a NumPy, PyTorch or CuPy array, got {type(x).__name__}")


def device_of(x) -> tuple[str, int]:
    """('cpu', 0) or ('cuda', index)."""
    fw = framework(x)
    if fw == "torch":
        return ("cuda", x.device.index or 0) if x.device.type == "cuda" else ("cpu", 0)
    if fw == "cupy":
        return ("cuda", x.device.id)
    if fw == "numpy":
        return ("cpu", 0)
    if hasattr(x, "__dlpack_device__"):
        kind, idx = x.__dlpack_device__()
        return ("cuda", int(idx)) if int(kind) in (2, 13) else ("cpu", 0)
    return ("cpu", 0)


def stream_handle(x, stream=None) -> int:
    """The cudaStream_t to run on, as an int: an explicit `stream` (an int, a torch.cuda.Stream or a
    cupy Stream), else the current stream of x's framework on x's device, else 0 (the legacy
    default stream; ignored on the CPU)."""
    if stream is not None:
        if isinstance(stream, numbers.Integral):
            return int(stream)
        for attr in ("cuda_stream", "ptr"):
            if hasattr(stream, attr):
                return int(getattr(stream, attr))
        raise TypeError(f"stream: expected an int handle, a torch.cuda.Stream or a cupy Stream, got {type(stream).__name__}")
    fw = framework(x)
    if fw == "torch":
        if x.device.type != "cuda":
            return 0
        import torch

        return torch.cuda.current_stream(x.device).cuda_stream
    if fw == "cupy":
        import cupy

        with x.device:
            return cupy.cuda.get_current_stream().ptr
    return 0


def _np_dtype(dt: str):
    import numpy as np

    # NumPy has no bf16: its arrays hold the bits as uint16 (see docs/python.md).
    return {BF16: np.uint16, F32: np.float32, U8: np.uint8, I32: np.int32, I64: np.int64}[dt]


def _torch_dtype(dt: str):
    import torch

    return {BF16: torch.bfloat16, F32: torch.float32, U8: torch.uint8, I32: torch.int32, I64: torch.int64}[dt]


def empty_like_fw(ref, shape, dt: str, *, zero: bool = False):
    """A new array of `shape` and mlakv dtype `dt` in ref's framework, on ref's device."""
    shape = tuple(shape)
    fw = framework(ref)
    if fw == "torch":
        import torch

        make = torch.zeros if zero else torch.empty
        return make(shape, dtype=_torch_dtype(dt), device=ref.device)
    if fw == "cupy":
        import cupy

        with ref.device:
            return (cupy.zeros if zero else cupy.empty)(shape, dtype=_np_dtype(dt))
    if device_of(ref)[0] == "cuda":
        raise TypeError("cannot allocate an output beside a CUDA array of an unknown framework: pass it in")
    import numpy as np

    return (np.zeros if zero else np.empty)(shape, dtype=_np_dtype(dt))


def scalar_f32(ref, value: float):
    """A one-element float32 array holding `value`, beside ref (for scales given as numbers)."""
    fw = framework(ref)
    if fw == "torch":
        import torch

        return torch.full((1,), float(value), dtype=torch.float32, device=ref.device)
    if fw == "cupy":
        import cupy

        with ref.device:
            return cupy.full((1,), value, dtype=cupy.float32)
    import numpy as np

    return np.full((1,), value, dtype=np.float32)


def is_bf16(x) -> bool:
    fw = framework(x)
    if fw == "torch":
        import torch

        return x.dtype == torch.bfloat16
    dt = getattr(x, "dtype", None)
    return dt is not None and getattr(dt, "name", str(dt)) in ("uint16", "bfloat16")


def torch_loaded() -> bool:
    return "torch" in sys.modules
