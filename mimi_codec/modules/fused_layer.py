"""The `fused_layer` speedup: a streamed transformer call of 1-4 rows runs each layer as one
numba kernel (`_numba_layer.py`), the layers one after the other on numpy arrays, instead of
~30 small PyTorch ops and 4 GEMMs per layer.

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
    serial, parallel = kernels()  # type: ignore[misc]
    freqs_np = freqs.numpy()
    h = x.reshape(B * T, C).contiguous().numpy()
    for layer, w, state in zip(layers, weights, states):
        attn = layer.self_attn
        context = attn.context
        state.reserve(T, attn.room(state, T))
        first, end = state.start, state.end
        ring = state.ring and context is not None
        if ring and end + T - first > context:
            first = end + T - context
        h = gemm.run_numba(serial, parallel, h, T, w[4], w[5], w[0], offset, freqs_np,  # type: ignore[index]
                           state.key_buf.numpy(), state.value_buf.numpy(), first, end,
                           context if context is not None else 0, w[1], w[8], w[6], w[7], w[2], w[3], w[9],  # type: ignore[index]
                           layer.norm1.eps)
        state.end += T
        if context is not None:
            state.keep_last(context if ring else context - 1)
    return torch.from_numpy(h).view(B, T, C)
