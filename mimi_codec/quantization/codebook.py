"""One Euclidean codebook, stored as the official EMA buffers.

The centroids are embedding_sum / clamp(cluster_usage, min=1e-5); they are computed once
and recomputed only when a buffer changes (loading, `.to()`, in-place edits).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

EPSILON = 1e-5


class Codebook(nn.Module):
    """Nearest-centroid quantizer over `bins` vectors of width `dim`."""

    def __init__(self, dim: int, bins: int) -> None:
        super().__init__()
        self.dim = dim
        self.bins = bins
        self.register_buffer("_initialized", torch.tensor([False], dtype=torch.float))
        self.register_buffer("cluster_usage", torch.ones(bins))
        self.register_buffer("embedding_sum", torch.zeros(bins, dim))
        self._cache: torch.Tensor | None = None
        self._cache_key: tuple[int, ...] = ()
        #: speedup switch: keep the centroid side of the distance matmul between calls.
        self.cache_distances = False
        self._table: torch.Tensor | None = None
        self._table_key: tuple[int, ...] = ()
        #: speedup switch: that operand (read whole by every streamed frame) in huge pages.
        self.huge_pages = False

    @property
    def embedding(self) -> torch.Tensor:
        """[bins, dim] centroids."""
        s, u = self.embedding_sum, self.cluster_usage
        key = (s.data_ptr(), s._version, u.data_ptr(), u._version)
        if self._cache is None or key != self._cache_key:
            self._cache = s / u.clamp(min=EPSILON)[:, None]
            self._cache_key = key
        return self._cache

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x: [N, dim] vectors.
        Returns:
            [N] int64 index of the nearest centroid (Euclidean distance).
        """
        if self.cache_distances and not torch.is_grad_enabled():  # inference only: no autograd
            return self._encode_cached(x)
        dists = torch.cdist(x[None], self.embedding[None], p=2)[0]
        return dists.argmin(dim=-1)

    def _encode_cached(self, x: torch.Tensor) -> torch.Tensor:
        """`encode` computing what torch.cdist computes (its matmul form: |x|^2 - 2 x.c + |c|^2
        as one GEMM of padded operands, clamp, sqrt), with the centroid operand
        [bins, dim + 2] = [c, 1, |c|^2] built once instead of on every call. Same operands
        and shapes as cdist's own GEMM, hence the same codes."""
        xs = x[None]
        x_norm = xs.pow(2).sum(-1, keepdim=True)
        x_pad = torch.cat([xs.mul(-2), x_norm, torch.ones_like(x_norm)], -1)
        dists = x_pad.matmul(self.distance_table()[None].mT).clamp_min_(0).sqrt_()[0]
        return dists.argmin(dim=-1)

    def distance_table(self) -> torch.Tensor:
        """[bins, dim + 2] the centroid operand of the distance GEMM, [c, 1, |c|^2], built
        once and again only when the centroids change."""
        emb = self.embedding
        key = (*self._cache_key, emb.data_ptr(), self.huge_pages)
        if self._table is None or key != self._table_key:
            table = torch.cat([emb, torch.ones_like(emb[:, :1]), emb.pow(2).sum(-1, keepdim=True)], -1)
            if self.huge_pages and table.device.type == "cpu" and not table.requires_grad:
                from ..modules.huge_pages import huge_copy

                table = torch.from_numpy(huge_copy(table.numpy()))  # same values and strides
            self._table = table
            self._table_key = key
        return self._table

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Args:
            codes: [...] int64 indices in 0..bins-1.
        Returns:
            [..., dim] centroids.
        """
        return F.embedding(codes, self.embedding)
