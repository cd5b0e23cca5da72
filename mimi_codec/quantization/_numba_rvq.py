"""The numba kernel behind the `fused_rvq` speedup (imported only when numba is installed).

Residual quantization of a few vectors through a chain of codebooks in one call: for each
codebook, the distances of every centroid as the GEMM torch.cdist uses (rows [-2x, |x|^2, 1]
against the centroid table [c, 1, |c|^2]), clamped at 0 and square-rooted, the first
nearest index, then the residual minus that centroid. The GEMM is the `numba_gemm` kernel's
(`rows_dot`), in another summation order than PyTorch's, so the kernel also proves that the
order cannot matter: any fp32 evaluation of a distance of n = D + 2 terms lies within
gamma_n * (2|x||c| + 2|x|^2 + |c|^2) of the exact value (gamma_n = n u / (1 - n u), u = 2^-24,
the classic bound, Cauchy-Schwarz for the dot product). When the nearest centroid beats
every other by more than both bounds (twice over: ours errs too), PyTorch's GEMM, in
whatever order it sums, picks the same one.

When it does not, the kernel settles the close candidates exactly (`exact_nearest`): their
sums taken in float64, where fp32 products are exact, and each compared with PyTorch's
possible error alone, on the actual term magnitudes. That leaves a near tie only where the
fp32 GEMM's summation order could decide it: then the kernel stops before that codebook and
the caller runs PyTorch's own op for it, so the codes are always those of the plain path.
On a streamed bria.mp3 the loose screen flags 16% of the stages; the exact check leaves
3.4% (152 of 4,480) to PyTorch, a fifth of the plain-op calls the screen alone made.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from numba import njit, prange

from ..modules._numba_gemm import FASTMATH, rows_dot


@njit(fastmath=False, cache=True, nogil=True)
def exact_nearest(padded, table, cand, gamma):  # pragma: no cover
    """The centroid among `cand` that PyTorch's fp32 GEMM, in any summation order, must find
    nearest to the row `padded` = [-2x, |x|^2, 1], or -1 when no order-free answer exists.

    Each candidate's sum is taken exactly (fp32 products are exact in fp64; the fp64 sum of
    n terms errs by under 1e-12 of their magnitudes), without the |x|^2 term, the same input
    to every sum of the row, which cancels from their differences. PyTorch's value for k
    lies within gamma * A_k of it (A_k: the sum of the terms' magnitudes). k loses to c
    when its lowest possible value beats c's highest by a relative 2^-20 (so that the sqrt
    cannot round the two together) and stays above 0 (so that the clamp cannot tie them).
    No fastmath: the order of this arithmetic is the proof's.
    """
    dim = padded.shape[0] - 2
    norm = float(padded[dim])
    slack = 1e-12
    # |x|^2 as PyTorch computed it lies within gamma_dim of ours (both within it of the exact)
    norm_lo = norm * (1.0 - 3.0 * gamma)
    norm_hi = norm * (1.0 + 3.0 * gamma)
    count = cand.shape[0]
    exact = np.empty(count)
    size = np.empty(count)
    for i in range(count):
        k = cand[i]
        e = float(table[k, dim + 1])
        a = abs(e) + norm_hi
        for t in range(dim):
            p = float(padded[t]) * float(table[k, t])
            e += p
            a += abs(p)
        exact[i] = e
        size[i] = a * (gamma + slack)
    top = 0
    for i in range(1, count):
        if exact[i] < exact[top]:
            top = i
    high = exact[top] + norm_hi + size[top]
    for i in range(count):
        if i == top:
            continue
        gap = exact[i] - exact[top] - size[i] - size[top]
        if gap <= max(high, 0.0) * 2.0 ** -20 or exact[i] + norm_lo - size[i] <= 0.0:
            return -1
    return cand[top]


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
        tight = (n * 2.0 ** -24) / (1.0 - n * 2.0 ** -24)  # gamma_n
        gamma = 2.0 * tight  # our fp32 distances err too: twice the bound
        padded = np.empty((rows, n), np.float32)
        best = np.empty(rows, np.int64)
        near = np.empty(max([t.shape[0] for t in tables]) + 1, np.int64)
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
                x2 = float(padded[r, dim])
                x1 = math.sqrt(x2)
                c2 = float(table[b, dim + 1])
                err_b = gamma * (2.0 * x1 * math.sqrt(c2) + 2.0 * x2 + c2)
                m = 0
                for j in range(bins):
                    if j == b:
                        continue
                    c2 = float(table[j, dim + 1])
                    err_j = gamma * (2.0 * x1 * math.sqrt(c2) + 2.0 * x2 + c2)
                    dj = float(dists[r, j])
                    if dj - float(dists[r, b]) <= 2.0 * (err_j + err_b) + 1e-6 * abs(dj) or dj <= 2.0 * err_j:
                        near[m] = j  # PyTorch could pick j: settle it exactly below
                        m += 1
                if m:
                    near[m] = b
                    b = exact_nearest(padded[r], table, near[: m + 1], tight)
                    if b < 0:
                        return q  # a true near tie: PyTorch's op decides
                best[r] = b
            for r in range(rows):
                codes[r, q] = best[r]
                for i in range(dim):
                    residual[r, i] = residual[r, i] - cents[best[r], i]
        return len(tables)

    return rvq_encode
