"""Causal 1-d convolutions that stream: a conv keeps its left context, a transposed conv
keeps the overlap it still owes to the next call.

The whole-input path runs the same `forward` with a fresh (zero) state, so the two
cannot drift apart: a fresh `ConvState` is exactly the causal left padding.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn
from torch.nn import functional as F

from . import gemm

if TYPE_CHECKING:
    import numpy as np

#: Convolutions whose output has at most this many steps run as one matmul when
#: `matmul_small` is on (streaming calls: 1..16 steps at the low-rate, wide layers).
MATMUL_MAX_STEPS = 64
#: With `numba_conv` on, convolutions of this many output steps run as the numba window GEMM
#: (a streamed frame's: 1-1920 steps; for the wide layers' 1-2 steps it reads the weights at
#: the memory's pace, as the few-row GEMMs do); more are whole-file work.
NUMBA_CONV_STEPS = range(1, 4097)
#: The window GEMM's tiles: this many windows by as many weight-row pairs as fit in these
#: bytes (so a tile's weights stay in L2 while its windows pass; one tile per core at least).
WINDOW_ROW_TILE = 64
WINDOW_TILE_BYTES = 128 * 1024


@dataclass
class ConvState:
    """Streaming state of a `CausalConv1d`.

    Attributes:
        previous: [B, C_in, K_eff - stride] the last inputs, left context for the next call.
        first: True until the first call ("replicate" padding fills `previous` then).
    """

    previous: torch.Tensor
    first: bool = True

    def reset(self) -> None:
        """Back to the start of a stream."""
        self.previous.zero_()
        self.first = True


@dataclass
class ConvTrState:
    """Streaming state of a `CausalConvTranspose1d`.

    Attributes:
        partial: [B, C_out, K - stride] overlap-add contribution owed to the next call (no bias).
    """

    partial: torch.Tensor

    def reset(self) -> None:
        """Back to the start of a stream."""
        self.partial.zero_()


class CausalConv1d(nn.Conv1d):
    """Conv1d with causal left padding (zeros or replicate of the first sample).

    Output step t sees inputs up to t * stride + stride - 1; an input of length T (a multiple
    of the stride) gives T / stride outputs.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, groups: int = 1, bias: bool = True,
                 pad_mode: str = "constant") -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         dilation=dilation, groups=groups, bias=bias)
        if pad_mode not in ("constant", "replicate"):
            raise ValueError(f"pad_mode: expected 'constant' or 'replicate', got {pad_mode!r}")
        self.pad_mode = pad_mode
        self.context = (kernel_size - 1) * dilation + 1 - stride
        #: speedup switch: short outputs as unfold + one matmul instead of F.conv1d.
        self.matmul_small = False
        #: speedup switch: that matmul with the weight prepacked for oneDNN (see gemm.py).
        self.packed_gemm = False
        #: speedup switch: that matmul through the numba kernel when it has 1-4 rows (gemm.py).
        self.numba_gemm = False
        #: "fp16": that matmul with float16 weights (changes results; see gemm.py).
        self.gemm_precision = "fp32"
        #: speedup switch: NUMBA_CONV_STEPS-step outputs through the numba window GEMM.
        self.numba_conv = False
        #: speedup switch: on that path, an ELU before the conv by the numba kernel, in the copy.
        self.numba_elu = False
        #: speedup switch: that path's reordered weight copy in huge pages (see huge_pages.py).
        self.huge_pages = False
        self._packed = gemm.PackedWeight()

    def init_state(self, batch_size: int) -> ConvState:
        """A fresh state for `batch_size` streams."""
        prev = torch.zeros(batch_size, self.in_channels, self.context,
                           device=self.weight.device, dtype=self.weight.dtype)
        return ConvState(prev)

    def forward(self, x: torch.Tensor, state: ConvState | None = None,  # type: ignore[override]
                elu: float | None = None) -> torch.Tensor:
        """Args:
            x: [B, C_in, T] with T a positive multiple of the stride.
            state: streaming state, updated in place; None for a fresh one.
            elu: if given, the input is ELU(x) with this alpha (the SEANets' ELU before each
                convolution, done here so the numba path can fuse it into its input copy).
        Returns:
            [B, C_out, T / stride]
        """
        assert x.shape[-1] % self.stride[0] == 0, "length must be a multiple of the stride"
        if state is None:
            state = self.init_state(x.shape[0])
        fast, x, elu = _take_numba(self, x, elu)
        if fast:
            return self._window_conv(x, state, elu)
        ctx = self.context
        if ctx:
            if state.first and self.pad_mode == "replicate":
                state.previous.copy_(x[..., :1].expand_as(state.previous))
            x = torch.cat([state.previous, x], dim=-1)
            state.previous.copy_(x[..., x.shape[-1] - ctx:])
        state.first = False
        steps = (x.shape[-1] - (self.kernel_size[0] - 1) * self.dilation[0] - 1) // self.stride[0] + 1
        if self.matmul_small and self.groups == 1 and steps <= MATMUL_MAX_STEPS:
            return self._matmul_conv(x)
        return F.conv1d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    def _numba_conv_applies(self, x: torch.Tensor) -> bool:
        steps = (x.shape[-1] + self.context - self.kernel_size[0]) // self.stride[0] + 1
        return steps in NUMBA_CONV_STEPS and self.dilation[0] == 1 and _numba_applies(self, x, steps)

    def _window_conv(self, x: torch.Tensor, state: ConvState, elu: float | None = None) -> torch.Tensor:
        """The convolution as one numba call (`_numba_conv.build`): [context, ELU(x) if `elu`]
        copied time-major into a buffer, the state carried, the window GEMM over it.

        Returns [B, C_out, T_out] as a view of a time-major [B, T_out, C_out] array: the
        elementwise ops after it keep that layout, so the next convolution's copy is a plain one.
        """
        import numpy as np

        B, C, T = x.shape
        ctx = self.context
        w, b, pair_tile = _window_operands(self, _out_by_time, self.out_channels)
        steps = (ctx + T - self.kernel_size[0]) // self.stride[0] + 1
        buf = np.empty((B, ctx + T, C), dtype=np.float32)
        out = np.empty((B, steps, self.out_channels), dtype=np.float32)
        serial, parallel = _step_kernels()  # type: ignore[misc]
        gemm.run_numba(serial[0], parallel[0], x.detach().numpy().transpose(0, 2, 1), state.previous.numpy(),
                       state.first and self.pad_mode == "replicate", elu is not None,
                       1.0 if elu is None else elu, buf, self.stride[0] * C, w, b, out, WINDOW_ROW_TILE, pair_tile)
        state.first = False
        return torch.from_numpy(out).transpose(1, 2)

    def _matmul_conv(self, x: torch.Tensor) -> torch.Tensor:
        """F.conv1d (no padding) as [B, T_out, C_in * K] @ [C_in * K, C_out]: for few output
        steps this reads the weight once in a fast GEMM instead of a slow small-conv path."""
        k, d, s = self.kernel_size[0], self.dilation[0], self.stride[0]
        span = (k - 1) * d + 1
        win = x.unfold(-1, span, s)  # [B, C_in, T_out, span]
        if d > 1:
            win = win[..., ::d]
        B, C, T, _ = win.shape
        cols = win.permute(0, 2, 1, 3).reshape(B, T, C * k)
        y = gemm.fast_linear(cols, self.weight, self.bias, self._packed, _out_by_rest, self.packed_gemm,
                             self.gemm_precision, self.numba_gemm)
        if y is None:
            y = F.linear(cols, self.weight.view(self.out_channels, C * k), self.bias)  # [B, T_out, C_out]
        return y.transpose(1, 2)


class CausalConvTranspose1d(nn.ConvTranspose1d):
    """ConvTranspose1d whose trailing K - stride outputs are carried to the next call.

    An input of T steps gives T * stride outputs; what the last inputs contribute beyond
    that is kept (without bias) and added to the start of the next call's output.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         groups=groups, bias=bias)
        self.overlap = kernel_size - stride
        if self.overlap < 0:
            raise ValueError(f"kernel_size {kernel_size} must be >= stride {stride}")
        #: speedup switch: short inputs as one matmul + overlap-add instead of F.conv_transpose1d.
        self.matmul_small = False
        #: speedup switch: that matmul with the weight prepacked for oneDNN (see gemm.py).
        self.packed_gemm = False
        #: speedup switch: that matmul through the numba kernel when it has 1-4 rows (gemm.py).
        self.numba_gemm = False
        #: "fp16": that matmul with float16 weights (changes results; see gemm.py).
        self.gemm_precision = "fp32"
        #: speedup switch: inputs of NUMBA_CONV_STEPS steps through the numba window GEMM.
        self.numba_conv = False
        #: speedup switch: on that path, an ELU before the conv by the numba kernel, in the copy.
        self.numba_elu = False
        #: speedup switch: that path's reordered weight copy in huge pages (see huge_pages.py).
        self.huge_pages = False
        self._packed = gemm.PackedWeight()

    def init_state(self, batch_size: int) -> ConvTrState:
        """A fresh state for `batch_size` streams."""
        partial = torch.zeros(batch_size, self.out_channels, self.overlap,
                              device=self.weight.device, dtype=self.weight.dtype)
        return ConvTrState(partial)

    def forward(self, x: torch.Tensor, state: ConvTrState | None = None,  # type: ignore[override]
                elu: float | None = None) -> torch.Tensor:
        """Args:
            x: [B, C_in, T]
            state: streaming state, updated in place; None for a fresh one.
            elu: if given, the input is ELU(x) with this alpha (see CausalConv1d.forward).
        Returns:
            [B, C_out, T * stride]
        """
        if state is None:
            state = self.init_state(x.shape[0])
        fast, x, elu = _take_numba(self, x, elu)
        if fast:
            return self._window_convtr(x, state, elu)
        if (self.matmul_small and self.groups == 1 and x.shape[-1] <= MATMUL_MAX_STEPS
                and self.kernel_size[0] % self.stride[0] == 0):
            y = self._matmul_convtr(x)
        elif (self.matmul_small and self.groups == self.in_channels == self.out_channels
              and x.shape[-1] <= MATMUL_MAX_STEPS and self.kernel_size[0] % self.stride[0] == 0):
            y = self._depthwise_convtr(x)
        else:
            y = F.conv_transpose1d(x, self.weight, self.bias, self.stride, 0, 0, self.groups)
        pt = self.overlap
        if pt:
            y[..., :pt] += state.partial
            tail = y[..., y.shape[-1] - pt:]
            if self.bias is not None:
                tail = tail - self.bias[:, None]
            state.partial.copy_(tail)
            y = y[..., : y.shape[-1] - pt]
        return y

    def _numba_conv_applies(self, x: torch.Tensor) -> bool:
        return (x.shape[-1] in NUMBA_CONV_STEPS and self.kernel_size[0] % self.stride[0] == 0
                and _numba_applies(self, x, x.shape[-1]))

    def _window_convtr(self, x: torch.Tensor, state: ConvTrState, elu: float | None = None) -> torch.Tensor:
        """F.conv_transpose1d (K = n * stride) as the numba window GEMM, then the overlap, in
        one numba call (`_numba_conv.build`).

        Output step t * stride + r sums input steps t, t - 1, ..., t - n + 1 against the
        weight's taps r + q * stride, so with the input time-major (and n - 1 zero steps on
        both sides) each input window of n steps gives `stride` output steps at once: a
        [T + n - 1, n * C_in] @ [n * C_in, stride * C_out] GEMM whose output, read as
        [(T + n - 1) * stride, C_out], is the full transposed convolution, time-major. Its
        first K - stride steps get the state's overlap, its last become the next one.
        Returns [B, C_out, T * stride], a view of a time-major array.
        """
        import numpy as np

        B, C, T = x.shape
        s, n = self.stride[0], self.kernel_size[0] // self.stride[0]
        co = self.out_channels
        w, b, pair_tile = _window_operands(self, _phases_by_window(s), s * co)
        buf = np.zeros((B, T + 2 * (n - 1), C), dtype=np.float32)
        out = np.empty((B, T + n - 1, s * co), dtype=np.float32)
        serial, parallel = _step_kernels()  # type: ignore[misc]
        gemm.run_numba(serial[1], parallel[1], x.detach().numpy().transpose(0, 2, 1), elu is not None,
                       1.0 if elu is None else elu, buf, w, b, out, state.partial.numpy(), b[:co], s,
                       WINDOW_ROW_TILE, pair_tile)
        return torch.from_numpy(out.reshape(B, (T + n - 1) * s, co)[:, :T * s]).transpose(1, 2)

    def _depthwise_convtr(self, x: torch.Tensor) -> torch.Tensor:
        """F.conv_transpose1d with one group per channel (Mimi's upsample) as products and an
        overlap-add: PyTorch's grouped path costs ~0.4 ms for a streamed frame's 512 x 1 input.
        Every output sums K / stride products, as in F.conv_transpose1d."""
        B, C, T = x.shape
        s, k = self.stride[0], self.kernel_size[0]
        n = k // s
        z = (x.unsqueeze(-1) * self.weight.view(1, C, 1, k)).view(B, C, T, n, s)
        y = z.new_zeros(B, C, T + n - 1, s)
        for j in range(n):
            y[:, :, j: j + T] += z[:, :, :, j]
        y = y.view(B, C, (T + n - 1) * s)
        if self.bias is not None:
            y = y + self.bias[:, None]
        return y

    def _matmul_convtr(self, x: torch.Tensor) -> torch.Tensor:
        """F.conv_transpose1d (K a multiple of the stride) as [B, T, C_in] @ [C_in, C_out * K]
        then an overlap-add of the K / stride blocks: one GEMM instead of the slow col2im path."""
        B, _, T = x.shape
        s, k = self.stride[0], self.kernel_size[0]
        n = k // s
        co = self.out_channels
        xt = x.transpose(1, 2)  # [B, T, C_in]
        z = gemm.fast_linear(xt, self.weight, None, self._packed, _rest_by_in, self.packed_gemm,
                             self.gemm_precision, self.numba_gemm)
        if z is None:
            z = torch.matmul(xt, self.weight.view(self.in_channels, co * k))
        z = z.view(B, T, co, n, s)
        y = z.new_zeros(B, T + n - 1, co, s)
        for j in range(n):
            y[:, j: j + T] += z[:, :, :, j]
        y = y.permute(0, 2, 1, 3).reshape(B, co, (T + n - 1) * s)
        if self.bias is not None:
            y = y + self.bias[:, None]
        return y


def _take_numba(conv: CausalConv1d | CausalConvTranspose1d, x: torch.Tensor,
                elu: float | None) -> tuple[bool, torch.Tensor, float | None]:
    """(whether the call takes the numba path, its input, the ELU alpha left for the kernel):
    an ELU the kernel does not apply (`numba_elu` off, or the PyTorch path) is applied here."""
    fast = conv.numba_conv and conv._numba_conv_applies(x)
    if elu is not None and not (fast and conv.numba_elu):
        return fast, F.elu(x, elu), None
    return fast, x, elu


def _numba_applies(conv: nn.Conv1d, x: torch.Tensor, steps: int) -> bool:
    """Whether `conv` (switched to numba_conv) can run `x` through the window GEMM. With
    float16 weights (the decoder option), only the calls that would not read them: those
    longer than the matmul path's MATMUL_MAX_STEPS, which PyTorch's fp32 conv would run."""
    return (x.dtype == torch.float32 and not x.requires_grad and conv.groups == 1
            and (conv.gemm_precision == "fp32" or steps > MATMUL_MAX_STEPS)  # type: ignore[attr-defined]
            and x.device.type == "cpu"
            and not torch.is_grad_enabled() and conv._parameters["weight"].dtype == torch.float32
            and gemm.numba_allowed() and _step_kernels() is not None)


def _window_operands(conv: nn.Module, as_out_by_window: Callable[[torch.Tensor], torch.Tensor],
                     cols: int) -> tuple[np.ndarray, np.ndarray, int]:
    """`conv`'s operands for the window GEMM, cached until its weight or bias changes: the
    weight as [cols, window] (`as_out_by_window`), in huge pages when `conv.huge_pages` and
    it is a reordered copy (a view of the weight is where the weight is); the bias repeated
    to [cols]; the weight-row pairs per tile."""
    weight, bias = conv._parameters["weight"], conv._parameters["bias"]
    packed: gemm.PackedWeight = conv._packed  # type: ignore[assignment]
    return packed.cached(f"numba_{as_out_by_window.__name__}", (weight, bias),  # type: ignore[return-value]
                         lambda: _build_operands(weight, as_out_by_window(weight.detach()), bias, cols,
                                                 conv.huge_pages))  # type: ignore[arg-type]


def _build_operands(weight: torch.Tensor, matrix: torch.Tensor, bias: torch.Tensor | None, cols: int,
                    huge: bool) -> tuple[np.ndarray, np.ndarray, int]:
    import numpy as np

    from .huge_pages import huge_copy

    dense = matrix.contiguous()
    w = dense.numpy()
    if huge and dense.untyped_storage().data_ptr() != weight.untyped_storage().data_ptr():
        w = huge_copy(w)
    b = (np.zeros(cols, dtype=np.float32) if bias is None
         else bias.detach().repeat(cols // bias.shape[0]).contiguous().numpy())
    return w, b, pairs_per_tile(cols, w.shape[1])


def pairs_per_tile(rows: int, cols: int) -> int:
    """Weight-row pairs per tile of the window GEMM over a [rows, cols] weight matrix: as
    many as fit in WINDOW_TILE_BYTES, at most half the pairs (one tile per core at least)."""
    return max(1, min((rows + 1) // 2, WINDOW_TILE_BYTES // (8 * cols)))


@functools.cache
def _step_kernels() -> tuple[tuple[Callable[..., None], ...], tuple[Callable[..., None], ...]] | None:
    """((conv_step, convtr_step) serial, the same parallel) of `_numba_conv`, or None without numba."""
    return gemm.build_kernels(f"{__package__}._numba_conv")  # type: ignore[return-value]


def _out_by_time(w: torch.Tensor) -> torch.Tensor:
    """Conv weight [C_out, C_in, K] as the [C_out, K * C_in] matrix of the window GEMM
    (kernel position major, input channel fastest: the time-major input's order)."""
    return w.permute(0, 2, 1).reshape(w.shape[0], -1)


@functools.cache
def _phases_by_window(stride: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Transposed-conv weight [C_in, C_out, n * stride] as the [stride * C_out, n * C_in]
    matrix of the window GEMM: row r * C_out + o is output phase r of channel o, column
    j * C_in + i is input channel i at window step j (tap (n - 1 - j) * stride + r)."""
    def phases_by_window(w: torch.Tensor) -> torch.Tensor:
        c_in, c_out, k = w.shape
        taps = w.view(c_in, c_out, k // stride, stride).flip(2)  # [C_in, C_out, j, r]
        return taps.permute(3, 1, 2, 0).reshape(stride * c_out, -1)
    phases_by_window.__name__ = f"phases_by_window_{stride}"
    return phases_by_window


def _out_by_rest(w: torch.Tensor) -> torch.Tensor:
    """Conv weight [C_out, C_in, K] as the [C_out, C_in * K] matrix of its GEMM."""
    return w.reshape(w.shape[0], -1)


def _rest_by_in(w: torch.Tensor) -> torch.Tensor:
    """Transposed-conv weight [C_in, C_out, K] as the [C_out * K, C_in] matrix of its GEMM."""
    return w.reshape(w.shape[0], -1).t()
