"""SEANet encoder and decoder: causal convolutions, ELU, residual blocks.

Layers live in `model` lists whose indices follow the official checkpoint, so a layer's
name in the state dict tells where it sits (e.g. `encoder.model.3` is the first strided conv).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from ..config import SeanetConfig
from .conv import CausalConv1d, CausalConvTranspose1d, ConvState, ConvTrState
from .fused_seanet import FusedSeanet, flatten_states


@dataclass
class ResBlockState:
    """Streaming state of a residual block: one per convolution (shortcut None if identity)."""

    convs: list[ConvState]
    shortcut: ConvState | None = None

    def reset(self) -> None:
        """Back to the start of a stream."""
        for s in self.convs:
            s.reset()
        if self.shortcut is not None:
            self.shortcut.reset()


@dataclass
class SeanetState:
    """Streaming state of a SEANet encoder or decoder: one entry per layer (None: stateless).

    Attributes:
        layers: the layers' states.
        flat: one buffer of which every convolution state's tensor is a view (for the
            `fused_seanet` program; see fused_seanet.flatten_states), or None.
        conv_states: the `ConvState`s in program order.
    """

    layers: list[ConvState | ConvTrState | ResBlockState | None] = field(default_factory=list)
    flat: torch.Tensor | None = field(default=None, repr=False)
    conv_states: list[ConvState] = field(default_factory=list, repr=False)

    def reset(self) -> None:
        """Back to the start of a stream."""
        for s in self.layers:
            if s is not None:
                s.reset()


class ResBlock(nn.Module):
    """x + conv1x1(ELU(conv_k(ELU(x)))), the hidden width being dim // compress."""

    def __init__(self, dim: int, cfg: SeanetConfig, dilation: int) -> None:
        super().__init__()
        hidden = dim // cfg.compress
        self.block = nn.ModuleList([
            nn.ELU(),
            CausalConv1d(dim, hidden, cfg.residual_kernel_size, dilation=dilation,
                         pad_mode=cfg.pad_mode),
            nn.ELU(),
            CausalConv1d(hidden, dim, 1, pad_mode=cfg.pad_mode),
        ])
        self.shortcut: CausalConv1d | None = (
            None if cfg.true_skip else CausalConv1d(dim, dim, 1, pad_mode=cfg.pad_mode))

    def init_state(self, batch_size: int) -> ResBlockState:
        """A fresh state for `batch_size` streams."""
        convs = [m.init_state(batch_size) for m in self.block if isinstance(m, CausalConv1d)]
        short = self.shortcut.init_state(batch_size) if self.shortcut is not None else None
        return ResBlockState(convs, short)

    def layer_states(self, state: ResBlockState) -> list[ConvState | None]:
        """One state per layer of `block` (None for the ELUs), as `_run` takes them."""
        convs = iter(state.convs)
        return [next(convs) if isinstance(m, CausalConv1d) else None for m in self.block]

    def forward(self, x: torch.Tensor, state: ResBlockState) -> torch.Tensor:
        """Args:
            x: [B, dim, T]
        Returns:
            [B, dim, T]
        """
        y = _run(self.block, x, self.layer_states(state))
        skip = x if self.shortcut is None else self.shortcut(x, state.shortcut)
        return skip + y


def _run(layers: nn.ModuleList, x: torch.Tensor, states: list) -> torch.Tensor:
    """The layers in turn, each with its state (None: stateless). An ELU is handed to the
    convolution after it, which may fuse it into its input copy (`numba_elu`)."""
    elu: float | None = None
    for layer, st in zip(layers, states):
        if isinstance(layer, nn.ELU):
            if elu is not None:
                x = F.elu(x, elu)
            elu = layer.alpha
        elif isinstance(layer, (CausalConv1d, CausalConvTranspose1d)):
            x, elu = layer(x, st, elu=elu), None
        else:
            if elu is not None:
                x, elu = F.elu(x, elu), None
            x = layer(x) if st is None else layer(x, st)
    return x if elu is None else F.elu(x, elu)


class _Seanet(nn.Module):
    """What the encoder and decoder share: the layers in `model`, their streaming state, and
    the `fused_seanet` switch."""

    model: nn.ModuleList

    def __init__(self) -> None:
        super().__init__()
        #: speedup switch: a streamed call as one numba program (fused_seanet.py).
        self.fused = False
        self._fused = FusedSeanet()

    def init_state(self, batch_size: int) -> SeanetState:
        """A fresh state for `batch_size` streams, its conv states views of one buffer."""
        state = SeanetState([m.init_state(batch_size) if hasattr(m, "init_state") else None for m in self.model])
        flatten_states(self.model, state)
        return state

    def _forward(self, x: torch.Tensor, state: SeanetState) -> torch.Tensor:
        if self.fused:
            y = self._fused.run(self.model, x, state)
            if y is not None:
                return y
        return _run(self.model, x, state.layers)


class SeanetEncoder(_Seanet):
    """Audio [B, channels, T] -> latent [B, dimension, T / hop_length]."""

    def __init__(self, cfg: SeanetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        mult = 1
        layers: list[nn.Module] = [
            CausalConv1d(cfg.channels, cfg.n_filters, cfg.kernel_size, pad_mode=cfg.pad_mode)]
        for ratio in reversed(cfg.ratios):
            width = mult * cfg.n_filters
            for j in range(cfg.n_residual_layers):
                layers.append(ResBlock(width, cfg, cfg.dilation_base ** j))
            layers += [nn.ELU(), CausalConv1d(width, width * 2, ratio * 2, stride=ratio,
                                              pad_mode=cfg.pad_mode)]
            mult *= 2
        layers += [nn.ELU(), CausalConv1d(mult * cfg.n_filters, cfg.dimension,
                                          cfg.last_kernel_size, pad_mode=cfg.pad_mode)]
        self.model = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, state: SeanetState) -> torch.Tensor:
        """Args:
            x: [B, channels, T] with T a multiple of hop_length.
            state: streaming state, updated in place.
        Returns:
            [B, dimension, T / hop_length]
        """
        return self._forward(x, state)


class SeanetDecoder(_Seanet):
    """Latent [B, dimension, S] -> audio [B, channels, S * hop_length]."""

    def __init__(self, cfg: SeanetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        mult = 2 ** len(cfg.ratios)
        layers: list[nn.Module] = [
            CausalConv1d(cfg.dimension, mult * cfg.n_filters, cfg.kernel_size, pad_mode=cfg.pad_mode)]
        for ratio in cfg.ratios:
            width = mult * cfg.n_filters
            layers += [nn.ELU(), CausalConvTranspose1d(width, width // 2, ratio * 2, stride=ratio)]
            for j in range(cfg.n_residual_layers):
                layers.append(ResBlock(width // 2, cfg, cfg.dilation_base ** j))
            mult //= 2
        layers += [nn.ELU(), CausalConv1d(cfg.n_filters, cfg.channels, cfg.last_kernel_size,
                                          pad_mode=cfg.pad_mode)]
        self.model = nn.ModuleList(layers)

    def forward(self, z: torch.Tensor, state: SeanetState) -> torch.Tensor:
        """Args:
            z: [B, dimension, S]
            state: streaming state, updated in place.
        Returns:
            [B, channels, S * hop_length]
        """
        return self._forward(z, state)
