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
(~1e-7 relative), codes stay those of the plain path. Inference only: with autograd on,
on another device or dtype, or where PyTorch lacks oneDNN, the plain `F.linear` runs.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

#: The packed path serves GEMMs of at most this many rows (streaming calls: 1-16 rows).
PACKED_MAX_ROWS = 16


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


class PackedWeight:
    """A weight in oneDNN's prepacked layout, repacked when its source tensor changes.

    Not part of the state dict; copying a module gives a copy that packs again on first use.
    """

    def __init__(self) -> None:
        self._packed: torch.Tensor | None = None
        self._key: tuple[object, ...] = ()

    def get(self, source: torch.Tensor, as_out_in: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The packed form of `as_out_in(source)`.

        Args:
            source: the module's weight parameter (its storage and version key the cache).
            as_out_in: maps it to the [N, K] matrix of y = x @ W^T.
        Returns:
            the packed [N, K] weight for `linear`.
        """
        key = (source.data_ptr(), source._version, source.shape, source.stride())
        if self._packed is None or key != self._key:
            self._packed = torch.ops.mkldnn._reorder_linear_weight(as_out_in(source.detach()).contiguous())
            self._key = key
        return self._packed

    def __deepcopy__(self, memo: dict[int, object]) -> "PackedWeight":
        return PackedWeight()

    def __getstate__(self) -> dict[str, object]:
        return {}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__()  # type: ignore[misc]


def usable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the packed path applies: a few-row ([..., K] with at most `PACKED_MAX_ROWS`
    rows) CPU fp32 inference call, and a oneDNN build."""
    return (x.numel() <= PACKED_MAX_ROWS * x.shape[-1] and not torch.is_grad_enabled()
            and x.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32 and available())


def linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """y = x @ W^T + b with W prepacked by `PackedWeight.get`.

    Args:
        x: [..., K] float32 on the CPU.
        packed: the packed [N, K] weight.
        bias: [N] or None.
    Returns:
        [..., N]
    """
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def _identity(w: torch.Tensor) -> torch.Tensor:
    return w


class Linear(nn.Linear):
    """nn.Linear (same parameters and state-dict names) with the `packed_gemm` switch."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        #: speedup switch: y = x W^T through oneDNN with W prepacked (inference on the CPU).
        self.packed_gemm = False
        self._packed = PackedWeight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., in_features] -> [..., out_features]"""
        if self.packed_gemm and usable(x, self.weight):
            return linear(x, self._packed.get(self.weight, _identity), self.bias)
        return F.linear(x, self.weight, self.bias)
