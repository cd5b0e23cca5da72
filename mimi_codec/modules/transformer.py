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


def apply_rope(q: torch.Tensor, k: torch.Tensor, offset: int, max_period: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate interleaved (real, imaginary) pairs of the last dimension by position.

    Args:
        q: [B, H, T, D] queries, D even.
        k: [B, H, T, D] keys.
        offset: position of the first step.
        max_period: period of the slowest rotation.
    Returns:
        (q, k) rotated, same shapes and dtype.
    """
    B, H, T, D = q.shape
    half = torch.arange(D // 2, device=q.device, dtype=torch.float32)
    freqs = torch.exp(half * (-math.log(max_period) * 2 / D))
    pos = offset + torch.arange(T, device=q.device, dtype=torch.float32)
    angle = freqs * pos.view(1, 1, T, 1)
    cos, sin = torch.cos(angle), torch.sin(angle)

    def rotate(x: torch.Tensor) -> torch.Tensor:
        pairs = x.view(B, H, T, D // 2, 2)
        re, im = pairs[..., 0].float(), pairs[..., 1].float()
        out = torch.stack([(re * cos - im * sin).to(x.dtype), (re * sin + im * cos).to(x.dtype)], dim=-1)
        return out.view(B, H, T, D)

    return rotate(q), rotate(k)


@dataclass
class AttentionState:
    """Keys and values kept for the next call.

    Attributes:
        keys: [B, H, L, D] rotated keys of the last L <= context - 1 steps.
        values: [B, H, L, D] their values.
        ring: emulate the reference's streaming cache, a ring of exactly `context` entries:
            when a call brings several steps, its first steps then see fewer than `context`
            keys (the reference's streaming output past `context` steps). False: every query
            sees `context` steps, as in the whole-input path.
    """

    keys: torch.Tensor
    values: torch.Tensor
    ring: bool = False

    def reset(self) -> None:
        """Back to the start of a stream (drops the kept steps)."""
        self.keys = self.keys[:, :, :0]
        self.values = self.values[:, :, :0]


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
        self.in_proj = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.out_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def init_state(self, batch_size: int, ring: bool = False) -> AttentionState:
        """A fresh state for `batch_size` streams (`ring`: see AttentionState)."""
        w = self.in_proj.weight
        d = w.shape[1] // self.num_heads
        empty = torch.zeros(batch_size, self.num_heads, 0, d, device=w.device, dtype=w.dtype)
        return AttentionState(empty, empty.clone(), ring)

    def forward(self, x: torch.Tensor, offset: int, state: AttentionState) -> torch.Tensor:
        """Args:
            x: [B, T, C] normalised input.
            offset: position of x's first step.
            state: kept keys/values, updated in place.
        Returns:
            [B, T, C]
        """
        B, T, C = x.shape
        q, k, v = self.in_proj(x).view(B, T, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, k, offset, self.max_period)
        past = state.keys.shape[2]
        keys = torch.cat([state.keys, k], dim=2) if past else k
        values = torch.cat([state.values, v], dim=2) if past else v
        ring = state.ring and self.context is not None
        if ring and keys.shape[2] > self.context:
            keys, values = keys[:, :, -self.context:], values[:, :, -self.context:]
            past = self.context - T
        pos_q = torch.arange(offset, offset + T, device=x.device).view(T, 1)
        pos_k = torch.arange(offset - past, offset + T, device=x.device).view(1, past + T)
        delta = pos_q - pos_k
        mask = delta >= 0
        if self.context is not None:
            mask = mask & (delta < self.context)
        out = F.scaled_dot_product_attention(q, keys, values, mask)
        if self.context is None:
            keep = keys.shape[2]
        else:
            keep = min(keys.shape[2], self.context if ring else self.context - 1)
        state.keys = keys[:, :, keys.shape[2] - keep:]
        state.values = values[:, :, values.shape[2] - keep:]
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
        self.linear1 = nn.Linear(cfg.d_model, cfg.dim_feedforward, bias=False)
        self.linear2 = nn.Linear(cfg.dim_feedforward, cfg.d_model, bias=False)
        scale = cfg.layer_scale
        self.layer_scale_1: nn.Module = nn.Identity() if scale is None else LayerScale(cfg.d_model, scale)
        self.layer_scale_2: nn.Module = nn.Identity() if scale is None else LayerScale(cfg.d_model, scale)

    def forward(self, x: torch.Tensor, offset: int, state: AttentionState) -> torch.Tensor:
        """x: [B, T, C] -> [B, T, C]"""
        x = x + self.layer_scale_1(self.self_attn(self.norm1(x), offset, state))
        return x + self.layer_scale_2(self.linear2(F.gelu(self.linear1(self.norm2(x)))))


class Transformer(nn.Module):
    """Causal transformer on [B, C, T] latents, with optional input/output projections."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.input_proj: nn.Linear | None = (
            None if cfg.input_dimension == cfg.d_model
            else nn.Linear(cfg.input_dimension, cfg.d_model, bias=False))
        self.layers = nn.ModuleList([TransformerLayer(cfg) for _ in range(cfg.num_layers)])
        out_dim = cfg.output_dimensions[0]
        self.output_proj: nn.Linear | None = (
            None if out_dim == cfg.d_model else nn.Linear(cfg.d_model, out_dim, bias=False))

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
        for layer, st in zip(self.layers, state.layers):
            x = layer(x, state.offset, st)
        state.offset += x.shape[1]
        if self.output_proj is not None:
            x = self.output_proj(x)
        return x.transpose(1, 2)
