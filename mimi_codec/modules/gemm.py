"""Few-row GEMMs against a fixed weight (y = x W^T + b), most of a streamed frame's time.

A streamed 80 ms frame multiplies 1-16 rows of activations by every transformer and wide
convolution weight, so the cost is reading the weights. On some CPUs PyTorch's default
fp32 GEMM (MKL) reads them with 2 rows at a third of the memory bandwidth, while oneDNN,
given the weight once in its own blocked layout, reads it about 2x faster with 2 threads
(docs/performance.md). The `packed_gemm` speedup keeps such a prepacked copy per weight
and is rebuilt when the weight changes (loading, `.to()`, an in-place edit).

Only calls of at most `PACKED_MAX_ROWS` rows take it: whole-file chunks (50 rows and more)
gain nothing from it here, so they neither pay for nor keep the packed copies.

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

import functools
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

#: The packed path serves GEMMs of at most this many rows (streaming calls: 1-16 rows).
PACKED_MAX_ROWS = 16


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


def check_precision(precision: object) -> str:
    """`precision` if it is one of PRECISIONS and this build can run it, else ValueError."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {list(PRECISIONS)}")
    if precision == "fp16" and not fp16_available():
        raise ValueError("precision 'fp16' needs PyTorch's FBGEMM kernels (x86-64 CPU builds); "
                         "this build has none: use 'fp32'")
    return str(precision)


class PackedWeight:
    """A weight packed for a fast GEMM kernel, repacked when its source tensor changes.

    Not part of the state dict; copying a module gives a copy that packs again on first use.
    """

    def __init__(self) -> None:
        self._packed: object = None
        self._key: tuple[object, ...] = ()

    def get(self, source: torch.Tensor, as_out_in: Callable[[torch.Tensor], torch.Tensor],
            precision: str = "fp32", bias: torch.Tensor | None = None) -> object:
        """The packed form of `as_out_in(source)`.

        Args:
            source: the module's weight parameter (its storage and version key the cache).
            as_out_in: maps it to the [N, K] matrix of y = x @ W^T.
            precision: "fp32" (oneDNN layout) or "fp16" (FBGEMM, with `bias` packed in).
            bias: [N] or None, for "fp16".
        Returns:
            the packed weight, for `fast_linear`.
        """
        key = (precision, *_tensor_key(source), *(_tensor_key(bias) if bias is not None else ()))
        if self._packed is None or key != self._key:
            w = as_out_in(source.detach()).contiguous()
            if precision == "fp16":
                b = None if bias is None else bias.detach()
                self._packed = torch.ops.quantized.linear_prepack_fp16(w, b)
            else:
                self._packed = torch.ops.mkldnn._reorder_linear_weight(w)
            self._key = key
        return self._packed

    def __deepcopy__(self, memo: dict[int, object]) -> "PackedWeight":
        return PackedWeight()

    def __getstate__(self) -> dict[str, object]:
        return {}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__()  # type: ignore[misc]


def _tensor_key(t: torch.Tensor) -> tuple[object, ...]:
    return (t.data_ptr(), t._version, t.shape, t.stride(), t.dtype)


def fast_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, cache: PackedWeight,
                as_out_in: Callable[[torch.Tensor], torch.Tensor], packed: bool,
                precision: str = "fp32") -> torch.Tensor | None:
    """y = x @ W^T + b through a packed kernel, or None where none applies (run the plain op).

    Args:
        x: [..., K] activations.
        weight: the module's weight; `as_out_in(weight)` is W, [N, K].
        bias: [N] or None.
        cache: the module's PackedWeight.
        packed: the `packed_gemm` switch (fp32 calls of at most PACKED_MAX_ROWS rows).
        precision: "fp16" takes FBGEMM's float16-weight kernel at any row count.
    Returns:
        [..., N], or None.
    """
    if (torch.is_grad_enabled() or x.device.type != "cpu" or x.dtype != torch.float32
            or weight.dtype != torch.float32):
        return None
    if precision == "fp16":
        return torch.ops.quantized.linear_dynamic_fp16(x, cache.get(weight, as_out_in, "fp16", bias))
    if packed and x.numel() <= PACKED_MAX_ROWS * x.shape[-1] and available():
        w = cache.get(weight, as_out_in)
        return torch.ops.mkldnn._linear_pointwise(x, w, bias, "none", [], "")
    return None


def _identity(w: torch.Tensor) -> torch.Tensor:
    return w


class Linear(nn.Linear):
    """nn.Linear (same parameters and state-dict names) with the `packed_gemm` switch and a
    `gemm_precision` ("fp32" or "fp16")."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        #: speedup switch: y = x W^T through oneDNN with W prepacked (few-row inference calls).
        self.packed_gemm = False
        #: "fp16": float16 weights (changes results; see the module docstring).
        self.gemm_precision = "fp32"
        self._packed = PackedWeight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., in_features] -> [..., out_features]"""
        y = fast_linear(x, self.weight, self.bias, self._packed, _identity, self.packed_gemm,
                        self.gemm_precision)
        return F.linear(x, self.weight, self.bias) if y is None else y
