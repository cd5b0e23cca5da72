"""Few-row GEMMs against a fixed weight (y = x W^T + b), most of a streamed frame's time.

A streamed 80 ms frame multiplies 1-16 rows of activations by every transformer and wide
convolution weight, so the cost is reading the weights. On some CPUs PyTorch's default
fp32 GEMM (MKL) reads them with 2 rows at a third of the memory bandwidth, while oneDNN,
given the weight once in its own blocked layout, reads it about 2x faster with 2 threads
(docs/performance.md). The `packed_gemm` speedup keeps such a prepacked copy per weight
and is rebuilt when the weight changes (loading, `.to()`, an in-place edit).

Only calls of at most `PACKED_MAX_ROWS` rows take it: whole-file chunks (50 rows and more)
gain nothing from it here, so they neither pay for nor keep the packed copies.

The `numba_gemm` speedup goes further for calls of at most `NUMBA_MAX_ROWS` rows (a streamed
transformer call has 2): a small numba kernel (`_numba_gemm.py`) reads the weight in place,
without a copy, at about the memory's own pace (15 GB/s with 2 threads on the EPYC machine,
against oneDNN's 8.5). It needs `numba` (a dependency of mimi-codec); where that is
missing, those calls take the oneDNN path.

It is plain fp32 arithmetic in another summation order: results move at rounding level
(~1e-7 relative), codes stay those of the plain path.

A module can also be told `gemm_precision = "fp16"`: its GEMMs then read float16 copies of
the weights (FBGEMM, activations and accumulation in fp32), half the bytes again, at any
row count. That changes results (~1e-3 relative), so MimiModel offers it only for the
decoder (`set_decoder_precision`), which never changes codes.

Inference only: with autograd on, on another device or dtype, or where PyTorch lacks the
kernel, the plain op runs (`fast_linear` returns None).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import threading
from typing import TYPE_CHECKING, Callable, Iterator, TypeVar

import torch
from torch import nn
from torch.nn import functional as F

if TYPE_CHECKING:
    import numpy as np

#: The packed path serves GEMMs of at most this many rows (streaming calls: 1-16 rows).
PACKED_MAX_ROWS = 16
#: The numba kernel serves GEMMs of at most this many rows (above, oneDNN is as fast).
NUMBA_MAX_ROWS = 4

_numba_lock = threading.Lock()
_numba_threads = threading.local()  # .torch: torch's thread count when this thread last sized numba's
_numba_paused: contextvars.ContextVar[bool] = contextvars.ContextVar("mimi_numba_paused", default=False)
R = TypeVar("R")


PRECISIONS = ("fp32", "fp16")


@functools.cache
def available() -> bool:
    """True when this PyTorch build has oneDNN's prepacked fp32 linear (x86-64 and arm64 wheels)."""
    try:
        w = torch.ones(3, 4)
        y = torch.ops.mkldnn._linear_pointwise(torch.ones(2, 4), torch.ops.mkldnn._reorder_linear_weight(w),
                                               None, "none", [], "")
        return bool(torch.equal(y, torch.full((2, 3), 4.0)))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


@functools.cache
def fp16_available() -> bool:
    """True when this PyTorch build has FBGEMM's float16-weight linear (x86-64 wheels)."""
    try:
        packed = torch.ops.quantized.linear_prepack_fp16(torch.ones(3, 4), None)
        y = torch.ops.quantized.linear_dynamic_fp16(torch.ones(2, 4), packed)
        return bool(torch.equal(y, torch.full((2, 3), 4.0)))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


@functools.cache
def numba_kernels() -> tuple[Callable[..., None], Callable[..., None]] | None:
    """The (serial, parallel) few-row GEMM kernels of `_numba_gemm`, or None without numba."""
    try:
        from ._numba_gemm import few_rows_gemm, few_rows_gemm_parallel
    except ImportError:
        return None
    return few_rows_gemm, few_rows_gemm_parallel


@contextlib.contextmanager
def numba_paused() -> Iterator[None]:
    """Within: the numba kernels (`numba_gemm`, `fused_layer`, `fused_rvq`) stay unused and
    the PyTorch ops run. Whole-file coding pauses them: its only few-row calls come from a
    last, short chunk, which is not worth the kernels' one-time compilation (~30 s on 2 cores
    the first time after installing)."""
    token = _numba_paused.set(True)
    try:
        yield
    finally:
        _numba_paused.reset(token)


def numba_allowed() -> bool:
    """False inside `numba_paused()`."""
    return not _numba_paused.get()


def run_numba(serial: Callable[..., R], parallel: Callable[..., R], *args: object) -> R:
    """Run a numba kernel on as many threads as torch uses: `serial` with a 1-thread budget
    (numba then starts no thread pool), else `parallel` on numba's pool, sized per call."""
    threads = torch.get_num_threads()
    if threads <= 1:
        return serial(*args)
    with _numba_lock:  # numba's "workqueue" layer (where OpenMP is missing) is not thread-safe
        if _numba_threads.__dict__.get("torch") != threads:  # numba's own check costs ~20 us a call
            import numba

            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            _numba_threads.torch = threads
        return parallel(*args)


def _numba_linear(x: torch.Tensor, w: np.ndarray, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ w^T (+ bias) with the numba kernel, on as many threads as torch uses."""
    import numpy as np

    rows = x.numel() // x.shape[-1]
    xs = x.reshape(rows, x.shape[-1]).contiguous().numpy()
    out = np.empty((rows, w.shape[0]), dtype=np.float32)
    run_numba(*numba_kernels(), w, xs, out)  # type: ignore[misc]
    y = torch.from_numpy(out)
    if bias is not None:
        y.add_(bias)
    return y.view(*x.shape[:-1], w.shape[0])


def check_precision(precision: object) -> str:
    """`precision` if it is one of PRECISIONS and this build can run it, else ValueError."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {list(PRECISIONS)}")
    if precision == "fp16" and not fp16_available():
        raise ValueError("precision 'fp16' needs PyTorch's FBGEMM kernels (x86-64 CPU builds); "
                         "this build has none: use 'fp32'")
    return str(precision)


def build_kernels(module: str) -> tuple[Callable[..., object], Callable[..., object]] | None:
    """The (serial, parallel) numba kernels of `module` (absolute name of a module with a
    `build(parallel)`), for `run_numba`; None without numba."""
    import importlib

    try:
        build = importlib.import_module(module).build
    except ImportError:
        return None
    return build(False), build(True)


class EmptyWhenCopied:
    """A cache that copies (deepcopy, pickle) as a fresh, empty one: it is rebuilt from the
    module's parameters on first use, never part of the state dict."""

    def __deepcopy__(self, memo: dict[int, object]) -> EmptyWhenCopied:
        return type(self)()

    def __getstate__(self) -> dict[str, object]:
        return {}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__()  # type: ignore[misc]


class PackedWeight(EmptyWhenCopied):
    """A weight in the forms fast GEMM kernels take, each rebuilt when the source changes.

    Not part of the state dict; copying a module gives a copy that packs again on first use.
    """

    def __init__(self) -> None:
        self._packed: dict[str, tuple[tuple[object, ...], object]] = {}

    def get(self, source: torch.Tensor, as_out_in: Callable[[torch.Tensor], torch.Tensor],
            kind: str = "fp32", bias: torch.Tensor | None = None) -> object:
        """The form of `as_out_in(source)` that a kernel takes.

        Args:
            source: the module's weight parameter (its storage and version key the cache).
            as_out_in: maps it to the [N, K] matrix of y = x @ W^T.
            kind: "fp32" (oneDNN's layout), "fp16" (FBGEMM, with `bias` packed in) or "numba"
                (a contiguous float32 numpy array, the weight itself when it already is one).
            bias: [N] or None, for "fp16".
        Returns:
            the packed weight, for `fast_linear`.
        """
        def build() -> object:
            w = as_out_in(source.detach()).contiguous()
            if kind == "fp16":
                return torch.ops.quantized.linear_prepack_fp16(w, None if bias is None else bias.detach())
            if kind == "numba":
                return w.numpy()
            return torch.ops.mkldnn._reorder_linear_weight(w)

        return self.cached(kind, (source, bias), build)

    def cached(self, kind: str, sources: tuple[torch.Tensor | None, ...],
               build: Callable[[], object]) -> object:
        """`build()`, kept under `kind` until one of `sources` changes (its storage, version,
        shape, strides or dtype): for forms `get` does not make."""
        key = tuple(_tensor_key(t) if t is not None else None for t in sources)
        hit = self._packed.get(kind)
        if hit is not None and hit[0] == key:
            return hit[1]
        made = build()
        self._packed[kind] = (key, made)
        return made


def _tensor_key(t: torch.Tensor) -> tuple[object, ...]:
    return (t.data_ptr(), t._version, t.shape, t.stride(), t.dtype)


def fast_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, cache: PackedWeight,
                as_out_in: Callable[[torch.Tensor], torch.Tensor], packed: bool,
                precision: str = "fp32", use_numba: bool = False) -> torch.Tensor | None:
    """y = x @ W^T + b through a fast kernel, or None where none applies (run the plain op).

    Args:
        x: [..., K] activations.
        weight: the module's weight; `as_out_in(weight)` is W, [N, K].
        bias: [N] or None.
        cache: the module's PackedWeight.
        packed: the `packed_gemm` switch (fp32 calls of at most PACKED_MAX_ROWS rows).
        precision: "fp16" takes FBGEMM's float16-weight kernel at any row count.
        use_numba: the `numba_gemm` switch (fp32 calls of at most NUMBA_MAX_ROWS rows,
            when numba is installed).
    Returns:
        [..., N], or None.
    """
    if (torch.is_grad_enabled() or x.device.type != "cpu" or x.dtype != torch.float32
            or weight.dtype != torch.float32):
        return None
    if precision == "fp16":
        return torch.ops.quantized.linear_dynamic_fp16(x, cache.get(weight, as_out_in, "fp16", bias))
    rows = x.numel() // max(1, x.shape[-1])
    if use_numba and 0 < rows <= NUMBA_MAX_ROWS and numba_allowed() and numba_kernels() is not None:
        return _numba_linear(x, cache.get(weight, as_out_in, "numba"), bias)  # type: ignore[arg-type]
    if packed and rows <= PACKED_MAX_ROWS and available():
        w = cache.get(weight, as_out_in)
        return torch.ops.mkldnn._linear_pointwise(x, w, bias, "none", [], "")
    return None


def identity(w: torch.Tensor) -> torch.Tensor:
    """A Linear's weight is already the [N, K] matrix of its GEMM."""
    return w


class Linear(nn.Linear):
    """nn.Linear (same parameters and state-dict names) with the `packed_gemm` and
    `numba_gemm` switches and a `gemm_precision` ("fp32" or "fp16")."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        #: speedup switch: y = x W^T through oneDNN with W prepacked (few-row inference calls).
        self.packed_gemm = False
        #: speedup switch: 1-4 row calls through the numba kernel (when numba is installed).
        self.numba_gemm = False
        #: "fp16": float16 weights (changes results; see the module docstring).
        self.gemm_precision = "fp32"
        self._packed = PackedWeight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., in_features] -> [..., out_features]"""
        y = fast_linear(x, self.weight, self.bias, self._packed, identity, self.packed_gemm,
                        self.gemm_precision, self.numba_gemm)
        return F.linear(x, self.weight, self.bias) if y is None else y
