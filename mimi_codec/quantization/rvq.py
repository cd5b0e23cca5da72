"""Residual vector quantizers: a plain RVQ with 1x1 projections, and Mimi's split RVQ
(semantic codebooks and acoustic codebooks quantize the same latent; outputs are summed).
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import torch
from torch import nn

from ..config import QuantizerConfig
from ..modules import gemm
from ..modules.conv import CausalConv1d
from .codebook import Codebook


class ResidualVQ(nn.Module):
    """Project [B, D_in, T] to the codebook width, quantize residually, project back."""

    def __init__(self, n_q: int, cfg: QuantizerConfig) -> None:
        super().__init__()
        # 1x1 convolutions (nn.Conv1d's parameters and arithmetic), with the speedup switches
        # of the SEANet's: a streamed frame's 1-step projections take the few-row GEMMs
        self.input_proj = CausalConv1d(cfg.input_dimension, cfg.dimension, 1, bias=False)
        self.output_proj = CausalConv1d(cfg.dimension, cfg.output_dimension, 1, bias=False)
        self.codebooks = nn.ModuleList([Codebook(cfg.dimension, cfg.bins) for _ in range(n_q)])
        #: speedup switch: encode calls of 1-4 vectors as one numba kernel (`_fused_encode`).
        self.fused = False

    def encode(self, x: torch.Tensor, n_q: int) -> torch.Tensor:
        """Args:
            x: [B, D_in, T] latent.
            n_q: codebooks to use, 1..len(codebooks).
        Returns:
            [B, n_q, T] int64 codes.
        """
        B, _, T = x.shape
        residual = self.input_proj(x).transpose(1, 2).reshape(B * T, -1)
        if self.fused:
            fused = _fused_encode(residual, self.codebooks[:n_q])
            if fused is not None:
                return fused.view(B, T, n_q).transpose(1, 2)
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


#: The fused kernel serves encode calls of at most this many vectors (batch x frames).
FUSED_MAX_ROWS = 4


@functools.cache
def fused_kernels() -> tuple[Callable[..., None], Callable[..., None]] | None:
    """(serial, parallel) residual quantization kernels, or None without numba."""
    return gemm.build_kernels(f"{__package__}._numba_rvq")  # type: ignore[return-value]


def _fused_encode(residual: torch.Tensor, codebooks: Sequence[Codebook]) -> torch.Tensor | None:
    """The `fused_rvq` speedup: the codes of `residual` [N, dim] through `codebooks` in one
    numba kernel, or None where it does not apply (autograd, another device or dtype, more
    than FUSED_MAX_ROWS vectors, no numba). The kernel leaves near ties to `Codebook.encode`
    (see `_numba_rvq.py`), run on the plain path's own residual tensor (same values, same
    strides), so the codes are those of the plain path. Returns [N, K] int64."""
    if (torch.is_grad_enabled() or residual.device.type != "cpu" or residual.dtype != torch.float32
            or residual.shape[0] > FUSED_MAX_ROWS or not gemm.numba_allowed() or fused_kernels() is None
            or any(cb.embedding_sum.dtype != torch.float32 for cb in codebooks)):
        return None
    work = residual.contiguous().clone()
    codes = torch.empty(residual.shape[0], len(codebooks), dtype=torch.long)
    tables = tuple(cb.distance_table().numpy() for cb in codebooks)
    centroids = tuple(cb.embedding.numpy() for cb in codebooks)
    serial, parallel = fused_kernels()  # type: ignore[misc]
    done = 0
    # the plain path's residual, kept in its memory layout: PyTorch's GEMM sums in an order
    # that depends on the operand's strides, which a true tie can turn on
    plain, plain_done = residual, 0
    while True:
        done = gemm.run_numba(serial, parallel, work.numpy(), tables, centroids, codes.numpy(), done)
        if done == len(codebooks):
            return codes
        # a near tie: this codebook through the plain op, on the plain path's very tensor
        for q in range(plain_done, done):
            plain = plain - codebooks[q].decode(codes[:, q])
        cb = codebooks[done]
        idx = cb.encode(plain)
        codes[:, done] = idx
        centroid = cb.decode(idx)
        plain, plain_done = plain - centroid, done + 1
        work -= centroid
        done += 1


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
