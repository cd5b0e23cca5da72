"""The `fused_seanet` speedup: a streamed call of a SEANet encoder or decoder as one numba
call (`_numba_seanet.py`) instead of ~15 convolution calls and 4 residual adds from Python.

The layers are compiled once per input shape into a program: a row per step (convolution,
transposed convolution, residual begin/end) pointing into three flat float32 arrays: every
convolution's window-GEMM weight and bias (the `numba_conv` operands, rebuilt when a weight
changes), and every streaming state. For the last, `flatten_states` makes the state's
`ConvState.previous` / `ConvTrState.partial` tensors views of one buffer (`SeanetState.flat`),
which the per-layer path updates in place just the same, so the two paths can alternate on
one stream. Each step runs the `numba_conv` kernels' own code: results are bit for bit the
layer-by-layer numba path's.

Where it does not apply (autograd, another dtype or device, float16 GEMMs, a dilated or
grouped conv, a non-identity residual shortcut, steps outside `NUMBA_CONV_STEPS`, no numba),
`FusedSeanet.run` returns None and the layers run one by one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from . import gemm
from .conv import (
    NUMBA_CONV_STEPS,
    WINDOW_ROW_TILE,
    CausalConv1d,
    CausalConvTranspose1d,
    ConvState,
    ConvTrState,
    _out_by_time,
    _phases_by_window,
    pairs_per_tile,
)

if TYPE_CHECKING:
    from .seanet import SeanetState

#: Op kinds (column KIND of a program row).
CONV, CONVTR, RES_BEGIN, RES_END = 0, 1, 2, 3
#: Program columns: kind; weight offset, rows, cols; bias offset; state offset, channels,
#: length; stride; ELU before it (0/1); weight-row pairs per tile; kernel size (conv) or
#: taps per phase n = K / stride (transposed conv); output channels.
COLUMNS = 13
KIND, W_OFF, W_ROWS, W_COLS, B_OFF, S_OFF, S_CH, S_LEN, STRIDE, ELU, PAIR_TILE, TAPS, C_OUT = range(COLUMNS)


@functools.cache
def kernels() -> tuple[Callable[..., np.ndarray], Callable[..., np.ndarray]] | None:
    """(serial, parallel) program kernels, or None without numba."""
    return gemm.build_kernels(f"{__package__}._numba_seanet")  # type: ignore[return-value]


def _walk(layers: nn.ModuleList, states: list) -> Iterator[tuple[str, nn.Module | None, object, float | None]]:
    """The steps `seanet._run` takes: ("conv", conv, state, ELU alpha before it or None),
    ("res_begin" | "res_end", None, block state, None), ("elu", ...) for an ELU left over,
    ("other", layer, state, None) for a layer the program cannot run."""
    from .seanet import ResBlock

    elu: float | None = None
    for layer, st in zip(layers, states):
        if isinstance(layer, nn.ELU):
            if elu is not None:
                yield "elu", layer, None, elu
            elu = layer.alpha
        elif isinstance(layer, (CausalConv1d, CausalConvTranspose1d)):
            yield "conv", layer, st, elu
            elu = None
        elif isinstance(layer, ResBlock) and elu is None and layer.shortcut is None:
            yield "res_begin", None, st, None
            yield from _walk(layer.block, layer.layer_states(st))
            yield "res_end", None, st, None
        else:
            yield "other", layer, st, None
    if elu is not None:
        yield "elu", None, None, elu


def flatten_states(layers: nn.ModuleList, state: SeanetState) -> None:
    """Make the convolution states of `state` views of one buffer, `state.flat` (their values
    kept, in program order), and list its `ConvState`s in that order (`state.conv_states`).
    The program finds each state at the same offset in every state made this way."""
    tensors: list[tuple[object, str, torch.Tensor]] = []
    for kind, _, st, _ in _walk(layers, state.layers):
        if kind == "conv" and isinstance(st, ConvState):
            tensors.append((st, "previous", st.previous))
        elif kind == "conv" and isinstance(st, ConvTrState):
            tensors.append((st, "partial", st.partial))
    if not tensors:
        return
    like = tensors[0][2]
    flat = torch.zeros(sum(t.numel() for _, _, t in tensors), dtype=like.dtype, device=like.device)
    at = 0
    for owner, name, t in tensors:
        view = flat[at: at + t.numel()].view(t.shape)
        view.copy_(t)
        setattr(owner, name, view)
        at += t.numel()
    state.flat = flat
    state.conv_states = [owner for owner, _, _ in tensors if isinstance(owner, ConvState)]


@dataclass
class _Weights:
    """The convolutions' window-GEMM operands, flat: weights, biases (repeated to the rows),
    and per convolution (weight offset, rows, cols, bias offset, weight-row pairs per tile)."""

    weights: np.ndarray
    biases: np.ndarray
    where: list[tuple[int, int, int, int, int]]


@dataclass
class _Program:
    ops: np.ndarray  # [steps, COLUMNS] int64
    alphas: np.ndarray  # [steps] float64
    no_replicate: np.ndarray  # [steps] uint8 zeros
    replicating: list[tuple[int, int]]  # (op row, index in state.conv_states) of "replicate" convs


class FusedSeanet(gemm.EmptyWhenCopied):
    """A SEANet's program per input shape and its flat operands, rebuilt when a convolution's
    weight or bias changes (object, storage, version) or its GEMM precision or huge-page
    switch does. Replacing a layer itself needs `forget()`, which `apply_speedups` calls.
    Copying gives an empty one."""

    def __init__(self) -> None:
        self._convs: list[nn.Module] | None = None
        self._key: tuple[object, ...] = ()
        self._weights: _Weights | None = None
        self._programs: dict[tuple[int, ...], _Program | None] = {}

    def forget(self) -> None:
        """Look the layers up again on the next call."""
        self.__init__()  # type: ignore[misc]

    def run(self, layers: nn.ModuleList, x: torch.Tensor, state: SeanetState) -> torch.Tensor | None:
        """The layers on x [B, C, T] through the program kernel, or None where it does not
        apply (then nothing was touched). Returns [B, C_out, T_out], a view of a time-major
        array, as the per-layer numba path does."""
        if (state.flat is None or torch.is_grad_enabled() or x.dtype != torch.float32 or x.device.type != "cpu"
                or not gemm.numba_allowed() or kernels() is None):
            return None
        weights = self._current_weights(layers, state)
        if weights is None:
            return None
        B, C, T = x.shape
        program = self._programs.get((B, C, T), False)
        if program is False:
            program = self._programs[(B, C, T)] = _compile(layers, state, weights, B, C, T)
        if program is None:
            return None
        replicate = program.no_replicate
        if program.replicating:
            replicate = replicate.copy()
            for row, i in program.replicating:
                replicate[row] = state.conv_states[i].first
        xt = np.ascontiguousarray(x.detach().numpy().transpose(0, 2, 1))
        y = gemm.run_numba(*kernels(), xt, program.ops, program.alphas, replicate,  # type: ignore[misc]
                           weights.weights, weights.biases, state.flat.numpy(), WINDOW_ROW_TILE)
        for st in state.conv_states:
            st.first = False
        return torch.from_numpy(y).transpose(1, 2)

    def _current_weights(self, layers: nn.ModuleList, state: SeanetState) -> _Weights | None:
        if self._convs is None:
            self._convs = [m for kind, m, _, _ in _walk(layers, state.layers) if kind == "conv"]
        convs = self._convs
        key = (*(c.gemm_precision for c in convs), *(c.huge_pages for c in convs),  # type: ignore[union-attr]
               *((t._version, t.data_ptr(), t.dtype, id(t)) if t is not None else None
                 for c in convs for t in (c._parameters["weight"], c._parameters["bias"])))
        if key != self._key:
            self._key = key
            self._weights = _build_weights(convs)
            self._programs = {}
        return self._weights


def _build_weights(convs: list[nn.Module]) -> _Weights | None:
    """The operands, written straight into their flat arrays (in huge pages with the
    `huge_pages` switch), one convolution's reordered matrix at a time."""
    from .huge_pages import huge_empty

    if not convs or any(c.gemm_precision != "fp32" or c.weight.dtype != torch.float32  # type: ignore[union-attr]
                        or c.weight.device.type != "cpu" or c.groups != 1 for c in convs):  # type: ignore[union-attr]
        return None
    if any(isinstance(c, CausalConvTranspose1d) and c.kernel_size[0] % c.stride[0] for c in convs):
        return None
    shapes = [_matrix_shape(c) for c in convs]
    sizes = [r * k for r, k in shapes]
    huge = all(c.huge_pages for c in convs)  # type: ignore[union-attr]
    flat = huge_empty((sum(sizes),), np.float32) if huge else np.empty(sum(sizes), np.float32)
    biases = np.zeros(sum(r for r, _ in shapes), np.float32)
    where = []
    w_at = b_at = 0
    for c, (rows, cols), size in zip(convs, shapes, sizes):
        w = c._parameters["weight"].detach()
        # one conv's reordered matrix at a time: building peaks at the flat array plus one
        m = _phases_by_window(c.stride[0])(w) if isinstance(c, CausalConvTranspose1d) else _out_by_time(w)
        torch.from_numpy(flat[w_at: w_at + size]).view(rows, cols).copy_(m)
        bias = c._parameters["bias"]
        if bias is not None:
            biases[b_at: b_at + rows] = bias.detach().repeat(rows // bias.shape[0]).numpy()
        where.append((w_at, rows, cols, b_at, pairs_per_tile(rows, cols)))
        w_at += size
        b_at += rows
    return _Weights(flat, biases, where)


def _matrix_shape(conv: nn.Module) -> tuple[int, int]:
    """(rows, cols) of a conv's window-GEMM matrix: [C_out, K * C_in] for a conv (weight
    [C_out, C_in, K]), [stride * C_out, K / stride * C_in] for a transposed one ([C_in, C_out, K])."""
    a, b, k = conv.weight.shape  # type: ignore[union-attr]
    if isinstance(conv, CausalConvTranspose1d):
        s = conv.stride[0]
        return s * b, k // s * a
    return a, k * b


def _compile(layers: nn.ModuleList, state: SeanetState, weights: _Weights, B: int, C: int, T: int) -> _Program | None:
    """The program of the layers on a [B, C, T] input, or None when a step cannot run in it."""
    ops: list[list[int]] = []
    alphas: list[float] = []
    replicating: list[tuple[int, int]] = []
    flat = state.flat
    assert flat is not None
    conv_index = state_index = 0
    for kind, m, st, elu in _walk(layers, state.layers):
        row = [0] * COLUMNS
        if kind in ("res_begin", "res_end"):
            row[KIND] = RES_BEGIN if kind == "res_begin" else RES_END
        elif kind != "conv":
            return None
        else:
            w_off, rows, cols, b_off, pair_tile = weights.where[conv_index]
            conv_index += 1
            s = m.stride[0]  # type: ignore[union-attr]
            if m.in_channels != C or not isinstance(st, (ConvState, ConvTrState)):  # type: ignore[union-attr]
                return None
            t = st.previous if isinstance(st, ConvState) else st.partial
            if t.untyped_storage().data_ptr() != flat.untyped_storage().data_ptr():
                return None
            row[W_OFF:B_OFF + 1] = [w_off, rows, cols, b_off]
            row[S_OFF:S_LEN + 1] = [t.storage_offset() - flat.storage_offset(), t.shape[1], t.shape[2]]
            row[STRIDE], row[ELU], row[PAIR_TILE] = s, elu is not None, pair_tile
            if isinstance(m, CausalConv1d):
                k = m.kernel_size[0]
                steps = (m.context + T - k) // s + 1
                if m.dilation[0] != 1 or T % s or steps not in NUMBA_CONV_STEPS:
                    return None
                row[KIND], row[TAPS], row[C_OUT] = CONV, k, m.out_channels
                if m.pad_mode == "replicate":
                    replicating.append((len(ops), state_index))
                state_index += 1
                T = steps
            else:
                if T not in NUMBA_CONV_STEPS:
                    return None
                row[KIND], row[TAPS], row[C_OUT] = CONVTR, m.kernel_size[0] // s, m.out_channels  # type: ignore[union-attr]
                T *= s
            C = m.out_channels  # type: ignore[union-attr]
        ops.append(row)
        alphas.append(1.0 if elu is None else float(elu))
    return _Program(np.array(ops, dtype=np.int64).reshape(-1, COLUMNS), np.array(alphas, dtype=np.float64),
                    np.zeros(len(ops), dtype=np.uint8), replicating)
