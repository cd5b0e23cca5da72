"""The `fused_layer` speedup: a streamed transformer call of 1-4 rows runs as one numba call
(`_numba_layer.py`) that takes the layers one after the other on numpy arrays, each layer
fused (~30 small PyTorch ops and 4 GEMMs in PyTorch). One call for all the layers, not one
per layer, since session 8: the Python and dispatch around a per-layer call cost ~60 us alone
and ~110 us inside a streamed frame.

The kernel writes the new keys and values straight into the layer's preallocated cache (the
`kv_buffer` speedup's buffers) and attends over the same slots, with the same mask, as
`SelfAttention.forward`; its arithmetic is fp32 in another order, at rounding level from the
PyTorch layer. Where it does not apply (autograd, another device or dtype, more rows, an
unbuffered cache, float16 GEMMs, no numba) `try_fused_layers` returns None and the PyTorch
layers run.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch
from torch import nn

from . import gemm

if TYPE_CHECKING:
    from .transformer import AttentionState, TransformerLayer

#: The fused kernel serves calls of at most this many rows (batch x steps).
FUSED_MAX_ROWS = 4


@functools.cache
def kernels() -> tuple[Callable[..., object], Callable[..., object]] | None:
    """(serial, parallel) layer kernels, or None without numba."""
    return gemm.build_kernels(f"{__package__}._numba_layer")


class FusedWeights(gemm.EmptyWhenCopied):
    """A layer's parameters as the float32 numpy arrays the kernel takes (views of the
    parameters themselves where they are contiguous), rebuilt when one of them changes
    (object, storage or version) or a GEMM's precision does.

    The submodules are looked up once (a call then costs a few dict lookups, not ~30
    `nn.Module` attribute lookups); their parameters are read from them on every call, so
    in-place edits, loading and new Parameter objects are all seen. Replacing a submodule
    itself needs `forget()`, which `apply_speedups` calls. Copying a layer gives an empty one.
    """

    def __init__(self) -> None:
        self._modules: tuple[nn.Module, ...] = ()
        self._key: tuple[object, ...] = ()
        self._arrays: tuple["np.ndarray", ...] | None = None
        #: (the layers' arrays, regrouped per kind) for the stacked kernel (`_by_kind`).
        self._stack: tuple[list[tuple["np.ndarray", ...]], tuple[tuple["np.ndarray", ...], ...]] | None = None

    def forget(self) -> None:
        """Look the submodules and parameters up again on the next call."""
        self.__init__()  # type: ignore[misc]

    def get(self, layer: "TransformerLayer") -> tuple["np.ndarray", ...] | None:
        """(w_qkv, w_out, w_1, w_2, norm1 w, b, norm2 w, b, scale1, scale2), or None when
        the layer is not one the kernel runs (float16 GEMMs, biases, another dtype)."""
        if not self._modules:
            attn = layer.self_attn
            self._modules = (attn.in_proj, attn.out_proj, layer.linear1, layer.linear2,
                             layer.norm1, layer.norm2, layer.layer_scale_1, layer.layer_scale_2)
        mods = self._modules
        params = [m._parameters for m in mods]
        tensors = [p["weight"] for p in params[:4]] + [params[4]["weight"], params[4]["bias"],
                                                       params[5]["weight"], params[5]["bias"]]
        tensors += [p.get("scale", tensors[4]) for p in params[6:]]
        key = (*(m.gemm_precision for m in mods[:4]), *(p["bias"] is None for p in params[:4]),
               *((id(t), t.data_ptr(), t._version) for t in tensors))
        if key != self._key:
            self._key = key
            ok = all(m.gemm_precision == "fp32" for m in mods[:4]) and all(p["bias"] is None for p in params[:4])
            ok = ok and all(t.dtype == torch.float32 and t.device.type == "cpu" for t in tensors)
            arrays = [t.detach().contiguous().numpy() for t in tensors] if ok else []
            for i in (8, 9):  # an identity layer scale: ones
                if ok and "scale" not in params[i - 2]:
                    arrays[i] = np.ones_like(arrays[4])
            self._arrays = tuple(arrays) if ok else None
        return self._arrays


def try_fused_layers(layers: Sequence["TransformerLayer"], x: torch.Tensor, offset: int,
                     freqs: torch.Tensor, states: Sequence["AttentionState"]) -> torch.Tensor | None:
    """The layers' output on x through the fused kernel, or None where it does not apply.

    Args:
        layers: the transformer's layers (their weights are read in place).
        x: [B, T, C] the first layer's input.
        offset: position of the first step.
        freqs: [D / 2] float32 rotary frequencies (`rope_freqs`).
        states: each layer's attention cache, updated in place as `SelfAttention.forward` does.
    Returns:
        [B, T, C], or None (and no state touched).
    """
    B, T, C = x.shape
    if (torch.is_grad_enabled() or x.device.type != "cpu" or x.dtype != torch.float32
            or B * T > FUSED_MAX_ROWS or not gemm.numba_allowed() or kernels() is None
            or not all(s.buffered for s in states)):
        return None
    weights = [layer._fused_weights.get(layer) for layer in layers]
    if any(w is None for w in weights):
        return None
    n = len(layers)
    firsts, ends = np.empty(n, np.int64), np.empty(n, np.int64)
    contexts, eps = np.empty(n, np.int64), np.empty(n, np.float64)
    for i, (layer, state) in enumerate(zip(layers, states)):
        attn = layer.self_attn
        context = attn.context
        state.reserve(T, attn.room(state, T))
        first, end = state.start, state.end
        if state.ring and context is not None and end + T - first > context:
            first = end + T - context
        firsts[i], ends[i] = first, end
        contexts[i] = context if context is not None else 0
        eps[i] = layer.norm1.eps
    by_kind = _by_kind(weights, layers[0]._fused_weights)  # type: ignore[arg-type]
    serial, parallel = kernels()  # type: ignore[misc]
    h = gemm.run_numba(serial, parallel, x.reshape(B * T, C).contiguous().numpy(), T, offset, freqs.numpy(),
                       firsts, ends, contexts, eps, by_kind[4], by_kind[5], by_kind[0],
                       tuple(s.key_buf.numpy() for s in states), tuple(s.value_buf.numpy() for s in states),
                       by_kind[1], by_kind[8], by_kind[6], by_kind[7], by_kind[2], by_kind[3], by_kind[9])
    for layer, state in zip(layers, states):
        context = layer.self_attn.context
        state.end += T
        if context is not None:
            state.keep_last(context if state.ring else context - 1)
    return torch.from_numpy(h).view(B, T, C)


def _by_kind(weights: list[tuple[np.ndarray, ...]], holder: FusedWeights) -> tuple[tuple[np.ndarray, ...], ...]:
    """The layers' arrays regrouped per kind (all the w_qkv, then all the w_out, ...), as the
    kernel takes them; kept in `holder` (the first layer's) while every layer's arrays are
    the same objects (`FusedWeights.get` returns the same tuple until a parameter changes)."""
    kept = holder._stack
    if kept is not None and len(kept[0]) == len(weights) and all(a is b for a, b in zip(kept[0], weights)):
        return kept[1]
    by_kind = tuple(zip(*weights))
    holder._stack = (list(weights), by_kind)
    return by_kind
