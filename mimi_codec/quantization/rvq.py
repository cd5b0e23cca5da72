"""Residual vector quantizers: a plain RVQ with 1x1 projections, and Mimi's split RVQ
(semantic codebooks and acoustic codebooks quantize the same latent; outputs are summed).
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import QuantizerConfig
from .codebook import Codebook


class ResidualVQ(nn.Module):
    """Project [B, D_in, T] to the codebook width, quantize residually, project back."""

    def __init__(self, n_q: int, cfg: QuantizerConfig) -> None:
        super().__init__()
        self.input_proj = nn.Conv1d(cfg.input_dimension, cfg.dimension, 1, bias=False)
        self.output_proj = nn.Conv1d(cfg.dimension, cfg.output_dimension, 1, bias=False)
        self.codebooks = nn.ModuleList([Codebook(cfg.dimension, cfg.bins) for _ in range(n_q)])

    def encode(self, x: torch.Tensor, n_q: int) -> torch.Tensor:
        """Args:
            x: [B, D_in, T] latent.
            n_q: codebooks to use, 1..len(codebooks).
        Returns:
            [B, n_q, T] int64 codes.
        """
        B, _, T = x.shape
        residual = self.input_proj(x).transpose(1, 2).reshape(B * T, -1)
        codes = []
        for cb in self.codebooks[:n_q]:
            idx = cb.encode(residual)
            residual = residual - cb.decode(idx)
            codes.append(idx.view(B, T))
        return torch.stack(codes, dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Args:
            codes: [B, K, T] int64, K <= len(codebooks).
        Returns:
            [B, D_out, T] sum of the centroids, projected.
        """
        out = self.codebooks[0].decode(codes[:, 0])
        for i in range(1, codes.shape[1]):
            out = out + self.codebooks[i].decode(codes[:, i])
        return self.output_proj(out.transpose(1, 2))


class SplitResidualVQ(nn.Module):
    """Mimi's quantizer: `semantic` takes codebooks 0..n_q_semantic-1, `acoustic` the rest."""

    def __init__(self, cfg: QuantizerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_q_semantic = cfg.n_q_semantic
        self.semantic = ResidualVQ(cfg.n_q_semantic, cfg)
        self.acoustic = ResidualVQ(cfg.n_q - cfg.n_q_semantic, cfg)

    def encode(self, x: torch.Tensor, n_q: int) -> torch.Tensor:
        """Args:
            x: [B, D, T] latent.
            n_q: codebooks in total, n_q_semantic..cfg.n_q.
        Returns:
            [B, n_q, T] int64 codes.
        """
        codes = self.semantic.encode(x, self.n_q_semantic)
        if n_q > self.n_q_semantic:
            codes = torch.cat([codes, self.acoustic.encode(x, n_q - self.n_q_semantic)], dim=1)
        return codes

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Args:
            codes: [B, K, T] int64, 1 <= K <= cfg.n_q.
        Returns:
            [B, D, T] quantized latent.
        """
        out = self.semantic.decode(codes[:, : self.n_q_semantic])
        if codes.shape[1] > self.n_q_semantic:
            out = out + self.acoustic.decode(codes[:, self.n_q_semantic:])
        return out
