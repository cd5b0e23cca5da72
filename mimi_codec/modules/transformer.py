"""Causal transformer of Mimi: LayerNorm, interleaved RoPE, GELU MLP, layer scale,
attention limited to a context of `context` steps (the query and context - 1 steps before it).

Streaming keeps, per layer, the keys and values of the last context - 1 steps. Every call
attends over [kept steps, new steps] with the same position mask as the whole-input path,
so the result does not depend on how the input is cut into calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from ..config import TransformerConfig
from .fused_layer import FusedWeights, try_fused_layers
from .gemm import Linear


def rope_freqs(dim: int, max_period: float, device: torch.device) -> torch.Tensor:
    """[D / 2] float32 rotation frequencies: pair i of position p turns by p * freqs[i]."""
    half = torch.arange(dim // 2, device=device, dtype=torch.float32)
    return torch.exp(half * (-math.log(max_period) * 2 / dim))


def rope_tables(T: int, offset: int, freqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary tables of T steps from `offset`, laid out for `apply_rope`.

    Args:
        T: steps.
        offset: position of the first step.
        freqs: [D / 2] from `rope_freqs`.
    Returns:
        (cos, sin), each [T, D] float32: cos = (cos a_i, cos a_i) and sin = (-sin a_i, sin a_i)
        for each interleaved pair i.
    """
    pos = offset + torch.arange(T, device=freqs.device, dtype=torch.float32)
    angle = freqs * pos.view(T, 1)
    cos, sin = torch.cos(angle), torch.sin(angle)
    dim = 2 * freqs.shape[0]
    return (torch.stack([cos, cos], -1).view(T, dim),
            torch.stack([-sin, sin], -1).view(T, dim))


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved (real, imaginary) pairs of the last dimension by position, in float32:
    (re, im) -> (re cos - im sin, im cos + re sin), as x * cos + swap_pairs(x) * sin.

    Args:
        x: [..., D] queries and/or keys, D even.
        cos, sin: from `rope_tables`, viewed to broadcast against x (the step dimension
            of x against their T).
    Returns:
        x rotated, same shape and dtype.
    """
    xf = x.float()
    swapped = xf.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    return (xf * cos + swapped * sin).to(x.dtype)


@dataclass
class StepContext:
    """What every layer of one transformer call shares: the positions, the rotary tables and
    the attention mask (built once per call, not once per layer)."""

    offset: int
    T: int
    context: int | None
    cos: torch.Tensor
    sin: torch.Tensor
    _masks: dict[int, torch.Tensor] = field(default_factory=dict)

    def mask(self, past: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """[T, past + T] additive mask: 0 where query t may see key j (causal, within
        `context` steps), -inf elsewhere (what attention makes of a boolean mask)."""
        m = self._masks.get(past)
        if m is None:
            pos_q = torch.arange(self.offset, self.offset + self.T, device=device).view(self.T, 1)
            pos_k = torch.arange(self.offset - past, self.offset + self.T, device=device).view(1, past + self.T)
            delta = pos_q - pos_k
            m = delta >= 0
            if self.context is not None:
                m = m & (delta < self.context)
            m = torch.zeros(m.shape, device=device, dtype=dtype).masked_fill_(~m, float("-inf"))
            self._masks[past] = m
        return m


@dataclass
class AttentionState:
    """Keys and values kept for the next call.

    With `buffered` (the `kv_buffer` speedup) they live in preallocated buffers of twice the
    context: a call writes its T new steps after the kept ones, and the kept steps are moved
    back to the front only when the buffer is full (about once every `context / T` calls).
    Without it, every call concatenates [kept, new] into a new tensor. Either way attention
    sees the same keys in the same order.

    Attributes:
        key_buf: [B, H, capacity, D] rotated keys; steps start..end-1 are the kept ones.
        value_buf: [B, H, capacity, D] their values.
        start, end: the kept steps' slots.
        ring: emulate the reference's streaming cache, a ring of exactly `context` entries:
            when a call brings several steps, its first steps then see fewer than `context`
            keys (the reference's streaming output past `context` steps). False: every query
            sees `context` steps, as in the whole-input path.
        buffered: preallocated buffers (True) or a concatenation per call (False).
    """

    key_buf: torch.Tensor
    value_buf: torch.Tensor
    start: int = 0
    end: int = 0
    ring: bool = False
    buffered: bool = True

    @property
    def keys(self) -> torch.Tensor:
        """[B, H, L, D] the kept keys."""
        return self.key_buf[:, :, self.start:self.end]

    @property
    def values(self) -> torch.Tensor:
        """[B, H, L, D] the kept values."""
        return self.value_buf[:, :, self.start:self.end]

    def reset(self) -> None:
        """Back to the start of a stream (drops the kept steps)."""
        self.start = self.end = 0

    def append(self, k: torch.Tensor, v: torch.Tensor, room: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Add T steps after the kept ones.

        Args:
            k, v: [B, H, T, D] the new keys and values.
            room: capacity in steps of a new buffer when the kept and new steps do not fit
                (2 x context; a call bringing more steps gets a buffer of exactly its size).
        Returns:
            (keys, values): [B, H, L + T, D] the kept steps then the new ones.
        """
        T, n = k.shape[2], self.end - self.start
        if not self.buffered:
            self.key_buf = torch.cat([self.keys, k], dim=2) if n else k
            self.value_buf = torch.cat([self.values, v], dim=2) if n else v
            self.start, self.end = 0, n + T
            return self.key_buf, self.value_buf
        self.reserve(T, room)
        self.key_buf[:, :, self.end:self.end + T] = k
        self.value_buf[:, :, self.end:self.end + T] = v
        self.end += T
        return self.keys, self.values

    def reserve(self, T: int, room: int) -> None:
        """Make the buffers hold T more steps after the kept ones (slots end..end+T-1), moving
        the kept steps to the front or into new buffers of `room` steps (or exactly enough
        when that is too few) when they do not. Buffered states only."""
        n = self.end - self.start
        if self.end + T > self.key_buf.shape[2]:
            if n + T > self.key_buf.shape[2]:
                B, H, _, D = self.key_buf.shape
                shape = (B, H, max(n + T, room), D)
                keys, values = self.key_buf.new_empty(shape), self.value_buf.new_empty(shape)
            else:
                keys, values = self.key_buf, self.value_buf
            keys[:, :, :n] = self.keys.clone()
            values[:, :, :n] = self.values.clone()
            self.key_buf, self.value_buf, self.start, self.end = keys, values, 0, n

    def keep_last(self, n: int) -> None:
        """Keep only the last n steps for the next call."""
        self.start = max(self.start, self.end - n)


@dataclass
class TransformerState:
    """Streaming state of a transformer: the position of the next step and each layer's cache."""

    offset: int = 0
    layers: list[AttentionState] = field(default_factory=list)

    def reset(self) -> None:
        """Back to the start of a stream."""
        self.offset = 0
        for s in self.layers:
            s.reset()


class SelfAttention(nn.Module):
    """Multi-head causal self-attention, stacked q/k/v projection, no biases."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.context = cfg.context
        self.max_period = cfg.max_period
        self.in_proj = Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.out_proj = Linear(cfg.d_model, cfg.d_model, bias=False)
        #: speedup switch: keys and values in preallocated buffers instead of a concat per call.
        self.kv_buffer = False

    def init_state(self, batch_size: int, ring: bool = False) -> AttentionState:
        """A fresh state for `batch_size` streams (`ring`: see AttentionState)."""
        w = self.in_proj.weight
        d = w.shape[1] // self.num_heads
        empty = torch.zeros(batch_size, self.num_heads, 0, d, device=w.device, dtype=w.dtype)
        return AttentionState(empty, empty.clone(), ring=ring, buffered=self.kv_buffer)

    def room(self, state: AttentionState, T: int) -> int:
        """Steps a new cache buffer holds when a call of T steps needs one."""
        return 2 * self.context if self.context is not None else 2 * (state.end - state.start + T)

    def forward(self, x: torch.Tensor, step: StepContext, state: AttentionState) -> torch.Tensor:
        """Args:
            x: [B, T, C] normalised input.
            step: positions, rotary tables and masks of this call.
            state: kept keys/values, updated in place.
        Returns:
            [B, T, C]
        """
        B, T, C = x.shape
        qkv = self.in_proj(x).view(B, T, 3, self.num_heads, C // self.num_heads)
        q, k = apply_rope(qkv[:, :, :2], step.cos, step.sin).permute(2, 0, 3, 1, 4)
        v = qkv[:, :, 2].transpose(1, 2)
        keys, values = state.append(k, v, self.room(state, T))
        past = keys.shape[2] - T
        ring = state.ring and self.context is not None
        if ring and keys.shape[2] > self.context:
            keys, values = keys[:, :, -self.context:], values[:, :, -self.context:]
            past = self.context - T
        out = F.scaled_dot_product_attention(q, keys, values, step.mask(past, x.device, q.dtype))
        if self.context is not None:
            state.keep_last(self.context if ring else self.context - 1)
        return self.out_proj(out.transpose(1, 2).reshape(B, T, C))


class LayerScale(nn.Module):
    """Per-channel learnt scale of a residual branch."""

    def __init__(self, channels: int, init: float) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((channels,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., C] -> [..., C]"""
        return self.scale * x


class TransformerLayer(nn.Module):
    """Pre-norm block: x + ls1(attn(norm1(x))), then x + ls2(linear2(gelu(linear1(norm2(x)))))."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.self_attn = SelfAttention(cfg)
        self.norm1 = nn.LayerNorm(cfg.d_model, eps=1e-5)
        self.norm2 = nn.LayerNorm(cfg.d_model, eps=1e-5)
        self.linear1 = Linear(cfg.d_model, cfg.dim_feedforward, bias=False)
        self.linear2 = Linear(cfg.dim_feedforward, cfg.d_model, bias=False)
        scale = cfg.layer_scale
        self.layer_scale_1: nn.Module = nn.Identity() if scale is None else LayerScale(cfg.d_model, scale)
        self.layer_scale_2: nn.Module = nn.Identity() if scale is None else LayerScale(cfg.d_model, scale)
        self._fused_weights = FusedWeights()  # this layer's arrays for the fused kernel

    def forward(self, x: torch.Tensor, step: StepContext, state: AttentionState) -> torch.Tensor:
        """x: [B, T, C] -> [B, T, C]"""
        x = x + self.layer_scale_1(self.self_attn(self.norm1(x), step, state))
        return x + self.layer_scale_2(self.linear2(F.gelu(self.linear1(self.norm2(x)))))


class Transformer(nn.Module):
    """Causal transformer on [B, C, T] latents, with optional input/output projections."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.input_proj: Linear | None = (
            None if cfg.input_dimension == cfg.d_model
            else Linear(cfg.input_dimension, cfg.d_model, bias=False))
        self.layers = nn.ModuleList([TransformerLayer(cfg) for _ in range(cfg.num_layers)])
        out_dim = cfg.output_dimensions[0]
        self.output_proj: Linear | None = (
            None if out_dim == cfg.d_model else Linear(cfg.d_model, out_dim, bias=False))
        #: speedup switch: streamed calls of 1-4 rows run each layer as one numba kernel
        #: (fused_layer.py).
        self.fused = False
        self._freqs: torch.Tensor | None = None

    def init_state(self, batch_size: int, ring: bool = False) -> TransformerState:
        """A fresh state for `batch_size` streams (`ring`: see AttentionState)."""
        return TransformerState(0, [layer.self_attn.init_state(batch_size, ring) for layer in self.layers])

    def forward(self, x: torch.Tensor, state: TransformerState) -> torch.Tensor:
        """Args:
            x: [B, C_in, T]
            state: streaming state, updated in place.
        Returns:
            [B, C_out, T]
        """
        x = x.transpose(1, 2)
        if self.input_proj is not None:
            x = self.input_proj(x)
        T = x.shape[1]
        freqs = self._rope_freqs(x.device)
        if self.fused:
            y = try_fused_layers(self.layers, x, state.offset, freqs, state.layers)
            if y is not None:
                state.offset += T
                return self._output(y)
        cos, sin = rope_tables(T, state.offset, freqs)
        # [T, D] -> [1, T, 1, 1, D]: against [B, T, (q, k), H, D]
        step = StepContext(state.offset, T, self.cfg.context, cos[:, None, None], sin[:, None, None])
        for layer, st in zip(self.layers, state.layers):
            x = layer(x, step, st)
        state.offset += x.shape[1]
        return self._output(x)

    def _output(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, d_model] after the last layer -> [B, C_out, T]"""
        if self.output_proj is not None:
            x = self.output_proj(x)
        return x.transpose(1, 2)

    def _rope_freqs(self, device: torch.device) -> torch.Tensor:
        """`rope_freqs` of this transformer, computed once per device."""
        if self._freqs is None or self._freqs.device != device:
            self._freqs = rope_freqs(self.cfg.d_model // self.cfg.num_heads, self.cfg.max_period, device)
        return self._freqs
