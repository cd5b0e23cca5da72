"""Small building blocks of the Moshi LM: linear layers (float or int8), RMSNorm, gated
feed-forward, token embeddings and rotary position embeddings."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

#: Token id whose embedding is exactly zero (the reference's "zero token").
ZERO_TOKEN = -1


class StackedLinear(nn.Module):
    """A bias-free linear layer holding `steps` weight sets stacked as one [steps*out, in] matrix.

    The stacked layout is the official one for the depformer's per-step attention weights
    (`in_proj_weight` is [steps*3*D, D]); with steps=1 it is an ordinary linear layer.
    After `quantize_()` the weight is int8 with a per-row fp32 absmax `weight_scb`
    (weight = int8 * scb / 127, the layout of the official `model.q8.safetensors`); the
    matmul then runs on the int8 values cast to the activation dtype, scaled per output row.

    Args:
        in_features: input width.
        out_features: output width of one weight set.
        steps: number of stacked weight sets.
    """

    def __init__(self, in_features: int, out_features: int, steps: int = 1,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.steps = steps
        self.weight = nn.Parameter(torch.empty(steps * out_features, in_features, device=device, dtype=dtype))
        self.weight_scb: nn.Parameter | None = None

    @property
    def quantized(self) -> bool:
        """Whether the weight is stored as int8 + per-row scale."""
        return self.weight_scb is not None

    def quantize_(self) -> None:
        """Switch to the int8 layout (on the weight's device; values are set by loading)."""
        rows = self.steps * self.out_features
        device = self.weight.device
        self.weight = nn.Parameter(torch.empty(rows, self.in_features, device=device, dtype=torch.int8),
                                   requires_grad=False)
        self.weight_scb = nn.Parameter(torch.empty(rows, device=device, dtype=torch.float32), requires_grad=False)

    def forward(self, x: torch.Tensor, step: int = 0) -> torch.Tensor:
        """Apply weight set `step`.

        Args:
            x: [..., in_features].
            step: which stacked weight set, 0 <= step < steps.
        Returns:
            [..., out_features].
        """
        n = self.out_features
        weight = self.weight if self.steps == 1 else self.weight[step * n:(step + 1) * n]
        if self.weight_scb is None:
            return F.linear(x, weight)
        scb = self.weight_scb if self.steps == 1 else self.weight_scb[step * n:(step + 1) * n]
        return F.linear(x, weight.to(x.dtype)) * (scb * (1.0 / 127.0)).to(x.dtype)


class RMSNorm(nn.Module):
    """RMS normalisation with a learnt scale `alpha` [1, 1, dim].

    Args:
        dim: feature width.
        eps: added to the mean square.
        fp32: compute in float32 whatever the input dtype (the official `rms_norm_f32`).
    """

    def __init__(self, dim: int, eps: float, fp32: bool,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.eps = eps
        self.fp32 = fp32
        self.alpha = nn.Parameter(torch.ones(1, 1, dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: [..., dim]. Returns: [..., dim] in x's dtype."""
        x_dtype = x.dtype
        if self.fp32 and x_dtype != torch.float32:
            x = x.float()
        var = self.eps + torch.mean(x * x, dim=-1, keepdim=True)
        alpha = self.alpha[0, 0]
        alpha = alpha if alpha.dtype == var.dtype else alpha.to(var.dtype)
        y = x * (alpha * torch.rsqrt(var))
        return y if y.dtype == x_dtype else y.to(x_dtype)


def make_norm(kind: str, dim: int, device: torch.device | str | None = None,
              dtype: torch.dtype | None = None) -> RMSNorm:
    """Build the normalisation named in the config (`rms_norm_f32` or `rms_norm`)."""
    if kind == "rms_norm_f32":
        return RMSNorm(dim, eps=1e-8, fp32=True, device=device, dtype=dtype)
    if kind == "rms_norm":
        return RMSNorm(dim, eps=1e-5, fp32=False, device=device, dtype=dtype)
    raise ValueError(f"unknown norm {kind!r}")


def gated_hidden(dim: int, dim_feedforward: int) -> int:
    """Hidden width of the gated feed-forward: 2/3 of `dim_feedforward` (21/8 dim when it is 4 dim)."""
    if dim_feedforward == 4 * dim:
        return (21 * dim) // 8
    return (2 * dim_feedforward) // 3


class Gating(nn.Module):
    """Gated feed-forward: `linear_out(act(a) * b)` with `[a, b] = linear_in(x)`.

    Args:
        dim: model width.
        dim_feedforward: nominal feed-forward width (see `gated_hidden`).
        activation: name of a torch activation (`silu` for Moshi).
    """

    def __init__(self, dim: int, dim_feedforward: int, activation: str,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        hidden = gated_hidden(dim, dim_feedforward)
        self.hidden = hidden
        self.activation = activation
        self._act = getattr(F, activation) if hasattr(F, activation) else getattr(torch, activation)
        self.linear_in = StackedLinear(dim, 2 * hidden, device=device, dtype=dtype)
        self.linear_out = StackedLinear(hidden, dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: [B, T, dim]. Returns: [B, T, dim]."""
        h = self.linear_in(x)
        h = h.view(*h.shape[:-1], 2, self.hidden)
        return self.linear_out(self._act(h[..., 0, :]) * h[..., 1, :])


class ScaledEmbedding(nn.Embedding):
    """Token embedding whose `ZERO_TOKEN` (-1) entries give exactly zero vectors."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Args: tokens: [...] int64, -1 for "no input". Returns: [..., dim]."""
        y = F.embedding(tokens.clamp(min=0), self.weight)
        return torch.where((tokens == ZERO_TOKEN)[..., None], 0.0, y)

    def lookup(self, tokens: torch.Tensor) -> torch.Tensor:
        """Fast path for tokens known to be valid ids (>= 0), as the generator's are.

        Args: tokens: [...] int64 in [0, num_embeddings). Returns: [..., dim].
        """
        return F.embedding(tokens, self.weight)


def rope_tables(positions: torch.Tensor, head_dim: int,
                max_period: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cosine and sine tables of interleaved RoPE for the given positions.

    Args:
        positions: [T] or [B, T] float32 absolute positions.
        head_dim: per-head width D (even).
        max_period: period of the slowest rotation.
    Returns:
        (cos, sin, freqs): cos and sin [T, D/2] or [B, 1, T, D/2] float32, broadcastable to
        [B, H, T, D/2]; freqs [D/2] the rotation frequencies.
    """
    ds = torch.arange(head_dim // 2, device=positions.device, dtype=torch.float32)
    freqs = torch.exp(ds * (-math.log(max_period) * 2 / head_dim))
    ts = positions[..., None].float()
    if ts.dim() == 3:
        ts = ts[:, None]
    angles = freqs * ts
    return torch.cos(angles), torch.sin(angles), freqs


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved (real, imaginary) pairs of `x` by the tabled angles, in float32.

    Args:
        x: [B, H, T, D].
        cos, sin: from `rope_tables`, broadcastable to [B, H, T, D/2].
    Returns:
        [B, H, T, D] in x's dtype.
    """
    pairs = x.view(*x.shape[:-1], x.shape[-1] // 2, 2)
    xr, xi = pairs[..., 0].float(), pairs[..., 1].float()
    out_r = xr * cos - xi * sin
    out_i = xr * sin + xi * cos
    return torch.stack([out_r.to(x.dtype), out_i.to(x.dtype)], dim=-1).view(x.shape)
