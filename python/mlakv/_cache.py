"""The paged cache as Python sees it: a framework tensor plus the facts the C++ CacheDesc needs."""

from __future__ import annotations

from . import _arrays
from . import _mlakv as _C

FORMATS = ("bf16", "fp8", "fp8_ds_mla", "dsv4")


def canonical_format(kv_cache_dtype: str) -> str:
    """'bf16', 'fp8', 'fp8_ds_mla' or 'dsv4' for vLLM's spellings ('auto' is bf16, 'fp8_e4m3' is fp8)."""
    if not isinstance(kv_cache_dtype, str):
        raise TypeError(f"kv_cache_dtype: expected a string, got {type(kv_cache_dtype).__name__}")
    return _C.format_layout(kv_cache_dtype, 1)[0]


def cache_shape(kv_cache_dtype: str, num_blocks: int, block_size: int, *, block_stride: int | None = None) -> tuple:
    """Shape of the cache tensor `empty_cache` allocates, vLLM's layout:

    - bf16: (num_blocks, block_size, 576) of bfloat16
    - fp8: (num_blocks, block_size, 576) of uint8 (e4m3 bits)
    - fp8_ds_mla: (num_blocks, block_size, 656) of uint8
    - dsv4: (num_blocks, block_stride) of uint8, block_stride padded to a multiple of 576 bytes

    A `block_stride` (bytes) larger than the natural block gives (num_blocks, block_stride / itemsize).
    """
    fmt, token_bytes, dense, stride, _ = _C.format_layout(kv_cache_dtype, int(block_size), int(block_stride or 0))
    if int(num_blocks) < 0:
        raise ValueError(f"num_blocks: {num_blocks}, expected >= 0")
    itemsize = 2 if fmt == "bf16" else 1
    if fmt != "dsv4" and stride == dense:
        return (int(num_blocks), int(block_size), token_bytes // itemsize)
    if stride % itemsize:
        raise ValueError(f"block_stride: {stride} bytes, expected a multiple of {itemsize} for {fmt}")
    return (int(num_blocks), stride // itemsize)


def storage_dtype(kv_cache_dtype: str) -> str:
    """'bf16' for a bf16 cache, else 'u8' (the element type `empty_cache` uses)."""
    return "bf16" if canonical_format(kv_cache_dtype) == "bf16" else "u8"


class Cache:
    """One paged MLA KV cache: `tensor` (dimension 0 counts the blocks, the rest hold one block,
    contiguous), its format, `block_size` tokens per block, `block_stride` bytes between blocks and,
    for fp8, the per-tensor `scale` (a float32 tensor on the same device; a number is turned into
    one). Construction checks that the tensor can hold the cache.

    `block_size` may be left out for a 3-D tensor (num_blocks, block_size, token width). A 1-D byte
    tensor needs `num_blocks` (or takes as many whole blocks as fit)."""

    __slots__ = ("tensor", "format", "block_size", "num_blocks", "block_stride", "scale", "_nb_arg", "_bs_arg")

    def __init__(self, tensor, kv_cache_dtype: str | None = None, block_size: int | None = None, scale=None, *,
                 num_blocks: int | None = None, block_stride: int | None = None):
        if kv_cache_dtype is None:
            if not _arrays.is_bf16(tensor):
                raise ValueError("kv_cache_dtype: required for a cache tensor that is not bf16 "
                                 "(bf16, fp8, fp8_ds_mla or dsv4)")
            kv_cache_dtype = "bf16"
        fmt = canonical_format(kv_cache_dtype)
        shape = tuple(getattr(tensor, "shape", ()))
        if block_size is None:
            if len(shape) != 3 or fmt == "dsv4":
                raise ValueError(f"block_size: required for a {fmt} cache tensor of shape {shape}")
            block_size = int(shape[1])
        if scale is not None and not hasattr(scale, "shape"):
            scale = _arrays.scalar_f32(tensor, float(scale))
        self._nb_arg = -1 if num_blocks is None else int(num_blocks)
        self._bs_arg = 0 if block_stride is None else int(block_stride)
        view = _C.CacheView(_arrays.as_arg(tensor, "kv_cache"), fmt, int(block_size), self._nb_arg, self._bs_arg,
                            _arrays.as_arg(scale, "scale"))
        self.tensor = tensor
        self.format = fmt
        self.block_size = int(block_size)
        self.num_blocks = view.num_blocks
        self.block_stride = view.block_stride
        self.scale = scale

    @property
    def token_bytes(self) -> int:
        return _C.format_layout(self.format, self.block_size)[1]

    @property
    def row_width(self) -> int:
        """Width of a dequantized row: 576, or 512 for dsv4."""
        return 512 if self.format == "dsv4" else 576

    @property
    def capacity(self) -> int:
        """Tokens the cache holds: num_blocks * block_size."""
        return self.num_blocks * self.block_size

    @property
    def device(self) -> str:
        kind, idx = _arrays.device_of(self.tensor)
        return "cpu" if kind == "cpu" else f"cuda:{idx}"

    def _view(self, scale=None):
        s = self.scale if scale is None else scale
        return _C.CacheView(_arrays.as_arg(self.tensor, "kv_cache"), self.format, self.block_size, self._nb_arg,
                            self._bs_arg, _arrays.as_arg(s, "scale"))

    def __repr__(self) -> str:
        return (f"Cache(format={self.format!r}, num_blocks={self.num_blocks}, block_size={self.block_size}, "
                f"block_stride={self.block_stride}, device={self.device!r})")


def empty_cache(kv_cache_dtype: str, num_blocks: int, block_size: int, *, device=None, framework: str | None = None,
                block_stride: int | None = None, scale: float | None = None) -> Cache:
    """A zero-filled cache in vLLM's layout (see `cache_shape`), as a `Cache`.

    framework: 'numpy', 'torch' or 'cupy'; by default numpy for device None or 'cpu', torch for a
    torch.device or a 'cuda...' string when torch is installed, else cupy. An fp8 cache gets a
    float32 scale tensor holding `scale` (default 1.0)."""
    fmt = canonical_format(kv_cache_dtype)
    shape = cache_shape(fmt, num_blocks, block_size, block_stride=block_stride)
    dt = storage_dtype(fmt)
    if framework is None:
        if device is None or str(device) == "cpu" and type(device).__module__ != "torch":
            framework = "numpy"
        else:
            try:
                import torch  # noqa: F401

                framework = "torch"
            except ImportError:
                framework = "cupy"
    if framework == "numpy":
        if device not in (None, "cpu"):
            raise ValueError(f"device: {device!r}, numpy arrays live on the cpu")
        import numpy as np

        tensor = np.zeros(shape, dtype=_arrays._np_dtype(dt))
    elif framework == "torch":
        import torch

        tensor = torch.zeros(shape, dtype=_arrays._torch_dtype(dt), device=device if device is not None else "cpu")
    elif framework == "cupy":
        import cupy

        dev = 0
        if device is not None:
            text = str(device)
            dev = int(text.split(":")[1]) if ":" in text else (int(text) if text.isdigit() else 0)
        with cupy.cuda.Device(dev):
            tensor = cupy.zeros(shape, dtype=_arrays._np_dtype(dt))
    else:
        raise ValueError(f"framework: {framework!r}, expected 'numpy', 'torch' or 'cupy'")
    if fmt == "fp8" and scale is None:
        scale = 1.0
    return Cache(tensor, fmt, block_size, scale)
