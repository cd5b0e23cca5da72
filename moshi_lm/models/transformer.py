"""Causal transformer of the Moshi LM (used twice: the temporal transformer and the depformer).

Two paths share the same weights and arithmetic:
- full sequence (`caches=None`): causal attention with a context-limited mask;
- streaming (`caches` given, one step at a time): keys and values go to a preallocated
  ring `KVCache` at slot `position % capacity` and the query attends over the filled
  slots. With `capacity == context`, the ring holds exactly the keys the context allows,
  so a conversation may run for any number of steps; RoPE is applied with absolute
  positions before caching, so the slot order does not matter.
Positions are passed in by the caller (no hidden counters).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .layers import Gating, StackedLinear, apply_rope, make_norm, rope_tables


@dataclass
class KVCache:
    """Preallocated ring of keys and values of one attention layer.

    keys, values: [B, H_kv, capacity, head_dim]; slot `p % capacity` holds position p.
    """

    keys: torch.Tensor
    values: torch.Tensor

    @property
    def capacity(self) -> int:
        """Number of positions the ring holds."""
        return self.keys.shape[2]

    @classmethod
    def empty(cls, batch_size: int, heads: int, capacity: int, head_dim: int,
              device: torch.device, dtype: torch.dtype) -> KVCache:
        """Allocate a zeroed cache for `batch_size` streams."""
        shape = (batch_size, heads, capacity, head_dim)
        return cls(torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype))


class LayerScale(nn.Module):
    """Per-channel scale of a residual branch (`scale` [dim])."""

    def __init__(self, dim: int, init: float, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((dim,), init, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: [..., dim]."""
        return self.scale * x


def attend_one(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Attention of one query position over n keys, from elementwise ops and plain reductions.

    Equal to `F.scaled_dot_product_attention` without a mask up to float rounding. On CPU
    that kernel, `bmm` and `torch.softmax` open a multi-threaded region even for a handful of
    scores, which costs a scheduler time slice per call when the cores are busy; elementwise
    ops and sums only go parallel above PyTorch's grain size (32768 elements).

    Args:
        q: [B, H, 1, D].
        keys, values: [B, H, n, D].
    Returns:
        [B, H, D].
    """
    scores = (keys * q).sum(dim=-1) * (q.shape[-1] ** -0.5)
    weights = (scores - scores.amax(dim=-1, keepdim=True)).exp_()
    weights = weights / weights.sum(dim=-1, keepdim=True)
    return (values * weights[..., None]).sum(dim=-2)


class Attention(nn.Module):
    """Causal multi-head self-attention with stacked per-step projections.

    Args:
        dim: model width.
        num_heads: query heads.
        steps: weight sets stacked in the projections (1 = shared).
        kv_repeat: query heads per key/value head.
        context: attention span in steps (None = unlimited) for the full-sequence path.
    """

    def __init__(self, dim: int, num_heads: int, steps: int, kv_repeat: int, context: int | None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.kv_heads = num_heads // kv_repeat
        self.kv_repeat = kv_repeat
        self.head_dim = dim // num_heads
        self.context = context
        kv_dim = self.kv_heads * self.head_dim
        self.in_proj = StackedLinear(dim, dim + 2 * kv_dim, steps, device=device, dtype=dtype)
        self.out_proj = StackedLinear(dim, dim, steps, device=device, dtype=dtype)

    def _project(self, x: torch.Tensor, weight_ids: list[int] | None) -> torch.Tensor:
        if weight_ids is None or self.in_proj.steps == 1:
            return self.in_proj(x)
        if len(weight_ids) == 1:
            return self.in_proj(x, weight_ids[0])
        return torch.cat([self.in_proj(x[:, t:t + 1], i) for t, i in enumerate(weight_ids)], dim=1)

    def _output(self, x: torch.Tensor, weight_ids: list[int] | None) -> torch.Tensor:
        if weight_ids is None or self.out_proj.steps == 1:
            return self.out_proj(x)
        if len(weight_ids) == 1:
            return self.out_proj(x, weight_ids[0])
        return torch.cat([self.out_proj(x[:, t:t + 1], i) for t, i in enumerate(weight_ids)], dim=1)

    def _repeat_kv(self, x: torch.Tensor) -> torch.Tensor:
        if self.kv_repeat == 1:
            return x
        return x.repeat_interleave(self.kv_repeat, dim=1)

    def step(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None, position: int,
             cache: KVCache, weight_id: int) -> torch.Tensor:
        """Streaming path: one position, keys/values into the ring, attend over its filled slots.

        Args:
            x: [B, dim] the (normed) input at `position`.
            rope: (cos, sin) tables [1, head_dim/2] for `position`, or None.
            position: absolute position.
            cache: the layer's ring cache.
            weight_id: weight set of this position.
        Returns:
            [B, dim].
        """
        B = x.shape[0]
        qkv = self.in_proj(x, weight_id)
        q = qkv[:, :self.dim].view(B, self.num_heads, 1, self.head_dim)
        kv = qkv[:, self.dim:].view(B, 2, self.kv_heads, self.head_dim)
        k, v = kv[:, 0], kv[:, 1]
        if rope is not None:
            q = apply_rope(q, *rope)
            k = apply_rope(k, *rope)
        slot = position % cache.capacity
        cache.keys[:, :, slot] = k
        cache.values[:, :, slot] = v
        n = min(position + 1, cache.capacity)
        keys = self._repeat_kv(cache.keys[:, :, :n])
        values = self._repeat_kv(cache.values[:, :, :n])
        return self.out_proj(attend_one(q, keys, values).reshape(B, self.dim), weight_id)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None,
                weight_ids: list[int] | None) -> torch.Tensor:
        """Full path: causal attention over the whole sequence, limited to the context.

        Args:
            x: [B, T, dim].
            rope: (cos, sin) tables [T, head_dim/2] for positions 0..T-1 (plus offset), or None.
            weight_ids: weight set per time step (length T), None = set 0.
        Returns:
            [B, T, dim].
        """
        B, T, _ = x.shape
        qkv = self._project(x, weight_ids)
        q = qkv[..., :self.dim].view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        kv = qkv[..., self.dim:].view(B, T, 2, self.kv_heads, self.head_dim)
        k = kv[:, :, 0].transpose(1, 2)
        v = kv[:, :, 1].transpose(1, 2)
        if rope is not None:
            q = apply_rope(q, *rope)
            k = apply_rope(k, *rope)
        pos = torch.arange(T, device=x.device)
        delta = pos[:, None] - pos[None, :]
        mask = delta >= 0
        if self.context is not None:
            mask = mask & (delta < self.context)
        out = F.scaled_dot_product_attention(q, self._repeat_kv(k), self._repeat_kv(v), mask)
        out = out.transpose(1, 2).reshape(B, T, self.dim)
        return self._output(out, weight_ids)


class TransformerLayer(nn.Module):
    """Pre-norm layer: x + attn(norm1(x)), then x + gating(norm2(x)), optional LayerScale.

    Args:
        dim: model width.
        num_heads: attention heads.
        dim_feedforward: nominal feed-forward width.
        steps: weight sets (per-step weights in the depformer); the gating is then a list.
        activation: gating activation name.
        norm: normalisation name.
        layer_scale: LayerScale init, or None.
        kv_repeat: query heads per key/value head.
        context: attention span for the full-sequence path.
    """

    def __init__(self, dim: int, num_heads: int, dim_feedforward: int, steps: int, activation: str,
                 norm: str, layer_scale: float | None, kv_repeat: int, context: int | None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.norm1 = make_norm(norm, dim, **kw)
        self.self_attn = Attention(dim, num_heads, steps, kv_repeat, context, **kw)
        self.norm2 = make_norm(norm, dim, **kw)
        self.per_step_gating = steps > 1
        if self.per_step_gating:
            self.gating: nn.Module = nn.ModuleList([Gating(dim, dim_feedforward, activation, **kw) for _ in range(steps)])
        else:
            self.gating = Gating(dim, dim_feedforward, activation, **kw)
        self.layer_scale_1: nn.Module = nn.Identity() if layer_scale is None else LayerScale(dim, layer_scale, **kw)
        self.layer_scale_2: nn.Module = nn.Identity() if layer_scale is None else LayerScale(dim, layer_scale, **kw)

    def _feed_forward(self, x: torch.Tensor, weight_ids: list[int] | None) -> torch.Tensor:
        if not self.per_step_gating:
            return self.gating(x)
        assert weight_ids is not None, "per-step weights need weight ids"
        gatings = self.gating
        if len(weight_ids) == 1:
            return gatings[weight_ids[0]](x)
        return torch.cat([gatings[i](x[:, t:t + 1]) for t, i in enumerate(weight_ids)], dim=1)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None,
                weight_ids: list[int] | None) -> torch.Tensor:
        """Full path. Args: see `Attention.forward`. Returns: [B, T, dim]."""
        x = x + self.layer_scale_1(self.self_attn(self.norm1(x), rope, weight_ids))
        return x + self.layer_scale_2(self._feed_forward(self.norm2(x), weight_ids))

    def step(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None, position: int,
             cache: KVCache, weight_id: int) -> torch.Tensor:
        """Streaming path. Args: see `Attention.step`. Returns: [B, dim]."""
        x = x + self.layer_scale_1(self.self_attn.step(self.norm1(x), rope, position, cache, weight_id))
        gating = self.gating[weight_id] if self.per_step_gating else self.gating
        return x + self.layer_scale_2(gating(self.norm2(x)))


class Transformer(nn.Module):
    """A stack of `TransformerLayer`s with optional interleaved RoPE.

    Args:
        num_layers: layers.
        max_period: RoPE period, None for no positional embedding.
        other args: see `TransformerLayer`.
    """

    def __init__(self, dim: int, num_heads: int, num_layers: int, dim_feedforward: int, steps: int,
                 activation: str, norm: str, layer_scale: float | None, kv_repeat: int,
                 context: int | None, max_period: float | None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.head_dim = dim // num_heads
        self.kv_heads = num_heads // kv_repeat
        self.context = context
        self.max_period = max_period
        self._freq_cache: dict[torch.device, torch.Tensor] = {}
        self.layers = nn.ModuleList([
            TransformerLayer(dim, num_heads, dim_feedforward, steps, activation, norm, layer_scale,
                             kv_repeat, context, device=device, dtype=dtype)
            for _ in range(num_layers)
        ])

    def new_caches(self, batch_size: int, capacity: int, device: torch.device,
                   dtype: torch.dtype) -> list[KVCache]:
        """One zeroed ring cache per layer."""
        return [KVCache.empty(batch_size, self.kv_heads, capacity, self.head_dim, device, dtype)
                for _ in self.layers]

    def _freqs(self, device: torch.device) -> torch.Tensor:
        """RoPE frequencies, computed once per device (not a parameter: no checkpoint entry)."""
        cached = self._freq_cache.get(device)
        if cached is None:
            cached = rope_tables(torch.zeros(1, device=device), self.head_dim, self.max_period or 1.0)[2]
            self._freq_cache[device] = cached
        return cached

    def forward(self, x: torch.Tensor, position: int = 0, caches: list[KVCache] | None = None,
                weight_ids: list[int] | None = None) -> torch.Tensor:
        """Run all layers.

        Args:
            x: [B, T, dim].
            position: absolute position of x[:, 0] (streaming: the step index).
            caches: per-layer ring caches for streaming (then T == 1), or None.
            weight_ids: weight set per time step for per-step weights, None = set 0.
        Returns:
            [B, T, dim].
        """
        if caches is not None:
            if x.shape[1] != 1:
                raise ValueError(f"streaming takes one step at a time, got T={x.shape[1]}")
            return self.step(x[:, 0], position, caches, 0 if weight_ids is None else weight_ids[0])[:, None]
        rope = None
        if self.max_period is not None:
            positions = torch.arange(x.shape[1], device=x.device, dtype=torch.float32) + position
            rope = rope_tables(positions, self.head_dim, self.max_period)[:2]
        for layer in self.layers:
            x = layer(x, rope, weight_ids)
        return x

    def step(self, x: torch.Tensor, position: int, caches: list[KVCache], weight_id: int = 0) -> torch.Tensor:
        """One streaming position through all layers.

        Args:
            x: [B, dim].
            position: absolute position (the step index).
            caches: per-layer ring caches.
            weight_id: weight set of this position (depformer step), 0 when shared.
        Returns:
            [B, dim].
        """
        rope = None
        if self.max_period is not None:
            angles = self._freqs(x.device) * float(position)
            rope = (torch.cos(angles)[None], torch.sin(angles)[None])
        for layer, cache in zip(self.layers, caches):
            x = layer.step(x, rope, position, cache, weight_id)
        return x
