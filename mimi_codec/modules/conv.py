"""Causal 1-d convolutions that stream: a conv keeps its left context, a transposed conv
keeps the overlap it still owes to the next call.

The whole-input path runs the same `forward` with a fresh (zero) state, so the two
cannot drift apart: a fresh `ConvState` is exactly the causal left padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from . import gemm

#: Convolutions whose output has at most this many steps run as one matmul when
#: `matmul_small` is on (streaming calls: 1..16 steps at the low-rate, wide layers).
MATMUL_MAX_STEPS = 64


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
        self._packed = gemm.PackedWeight()

    def init_state(self, batch_size: int) -> ConvState:
        """A fresh state for `batch_size` streams."""
        prev = torch.zeros(batch_size, self.in_channels, self.context,
                           device=self.weight.device, dtype=self.weight.dtype)
        return ConvState(prev)

    def forward(self, x: torch.Tensor, state: ConvState | None = None) -> torch.Tensor:  # type: ignore[override]
        """Args:
            x: [B, C_in, T] with T a positive multiple of the stride.
            state: streaming state, updated in place; None for a fresh one.
        Returns:
            [B, C_out, T / stride]
        """
        assert x.shape[-1] % self.stride[0] == 0, "length must be a multiple of the stride"
        if state is None:
            state = self.init_state(x.shape[0])
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
        self._packed = gemm.PackedWeight()

    def init_state(self, batch_size: int) -> ConvTrState:
        """A fresh state for `batch_size` streams."""
        partial = torch.zeros(batch_size, self.out_channels, self.overlap,
                              device=self.weight.device, dtype=self.weight.dtype)
        return ConvTrState(partial)

    def forward(self, x: torch.Tensor, state: ConvTrState | None = None) -> torch.Tensor:  # type: ignore[override]
        """Args:
            x: [B, C_in, T]
            state: streaming state, updated in place; None for a fresh one.
        Returns:
            [B, C_out, T * stride]
        """
        if state is None:
            state = self.init_state(x.shape[0])
        if (self.matmul_small and self.groups == 1 and x.shape[-1] <= MATMUL_MAX_STEPS
                and self.kernel_size[0] % self.stride[0] == 0):
            y = self._matmul_convtr(x)
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


def _out_by_rest(w: torch.Tensor) -> torch.Tensor:
    """Conv weight [C_out, C_in, K] as the [C_out, C_in * K] matrix of its GEMM."""
    return w.reshape(w.shape[0], -1)


def _rest_by_in(w: torch.Tensor) -> torch.Tensor:
    """Transposed-conv weight [C_in, C_out, K] as the [C_out * K, C_in] matrix of its GEMM."""
    return w.reshape(w.shape[0], -1).t()
