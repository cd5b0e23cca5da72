"""The numba kernel behind the `fused_rvq` speedup (imported only when numba is installed).

Residual quantization of a few vectors through a chain of codebooks in one call: for each
codebook, the distances of every centroid as the GEMM torch.cdist uses (rows [-2x, |x|^2, 1]
against the centroid table [c, 1, |c|^2]), clamped at 0 and square-rooted, the first
nearest index, then the residual minus that centroid. The GEMM is the `numba_gemm` kernel's
(`rows_dot`), in another summation order than PyTorch's, so the kernel also proves that the
order cannot matter: any fp32 evaluation of a distance of n = D + 2 terms lies within
gamma_n * (2|x||c| + 2|x|^2 + |c|^2) of the exact value (gamma_n = n u / (1 - n u), u = 2^-24,
the classic bound, Cauchy-Schwarz for the dot product). When the nearest centroid beats
every other by more than both bounds (twice over), PyTorch's GEMM, in whatever order it
sums, picks the same one. When it does not (a near tie by this loose bound: 16% of the
stages on bria.mp3), the kernel stops before that codebook and the caller runs PyTorch's own op for it, so the codes
are always those of the plain path.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from numba import njit, prange

from ..modules._numba_gemm import FASTMATH, rows_dot


def build(parallel: bool) -> Callable[..., int]:
    """The kernel, with numba's parallel loops over centroids (`parallel`) or serial."""

    @njit(parallel=parallel, fastmath=FASTMATH, cache=True, nogil=True)
    def rvq_encode(residual, tables, centroids, codes, start):  # pragma: no cover
        """residual: [N, D] float32, replaced by what the codebooks leave. tables: tuple of
        K [bins, D + 2] distance tables; centroids: tuple of K [bins, D]; codes: [N, K] int64
        out. Runs codebooks start..K-1 and returns K, or the first codebook whose nearest
        centroid is a near tie, left undone (residual and codes as before it)."""
        threaded = parallel  # noqa: F841  (keeps the two builds apart in numba's cache)
        rows, dim = residual.shape
        n = dim + 2
        gamma = 2.0 * (n * 2.0 ** -24) / (1.0 - n * 2.0 ** -24)  # twice the bound, for safety
        padded = np.empty((rows, n), np.float32)
        best = np.empty(rows, np.int64)
        for q in range(start, len(tables)):
            table, cents = tables[q], centroids[q]
            bins = table.shape[0]
            for r in range(rows):
                norm = np.float32(0.0)
                for i in range(dim):
                    norm += residual[r, i] * residual[r, i]
                    padded[r, i] = np.float32(-2.0) * residual[r, i]
                padded[r, dim] = norm
                padded[r, dim + 1] = np.float32(1.0)
            dists = np.empty((rows, bins), np.float32)
            for j in prange(bins):
                rows_dot(table, j, padded, dists)
            for r in range(rows):
                b, best_d = 0, np.float32(np.inf)
                for j in range(bins):
                    d = np.float32(math.sqrt(max(dists[r, j], np.float32(0.0))))
                    if d < best_d:
                        b, best_d = j, d
                best[r] = b
                x2 = float(padded[r, dim])
                x1 = math.sqrt(x2)
                c2 = float(table[b, dim + 1])
                err_b = gamma * (2.0 * x1 * math.sqrt(c2) + 2.0 * x2 + c2)
                for j in range(bins):
                    if j == b:
                        continue
                    c2 = float(table[j, dim + 1])
                    err_j = gamma * (2.0 * x1 * math.sqrt(c2) + 2.0 * x2 + c2)
                    dj = float(dists[r, j])
                    if dj - float(dists[r, b]) <= 2.0 * (err_j + err_b) + 1e-6 * abs(dj) or dj <= 2.0 * err_j:
                        return q  # a near tie: PyTorch's op decides
            for r in range(rows):
                codes[r, q] = best[r]
                for i in range(dim):
                    residual[r, i] = residual[r, i] - cents[best[r], i]
        return len(tables)

    return rvq_encode
