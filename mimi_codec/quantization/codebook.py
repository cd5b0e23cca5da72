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
        dists = torch.cdist(x[None], self.embedding[None], p=2)[0]
        return dists.argmin(dim=-1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Args:
            codes: [...] int64 indices in 0..bins-1.
        Returns:
            [..., dim] centroids.
        """
        return F.embedding(codes, self.embedding)
