"""The numba kernel behind the `numba_gemm` speedup (imported only when numba is installed).

out[m, n] = sum_k W[n, k] X[m, k] for a few rows m and every output n: one
pass over those weight rows, each read from memory once and reused from L1 for every m. It
streams the weights at the memory's own pace, which PyTorch's fp32 kernels do not on some
CPUs (docs/performance.md). With one thread the caller runs `few_rows_gemm` (numba starts
no thread pool); with more, `few_rows_gemm_parallel`, whose outputs numba's own pool splits
(a split over Python threads measured slower: torch's spinning OpenMP workers hold the other
core). Only reassociation and contraction are allowed to the compiler (`FASTMATH`: a
vectorised sum, fused multiply-adds): fp32 results at rounding level from the plain GEMM.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

#: The compiler's licence in every Mimi numba kernel: reassociation and contraction only.
FASTMATH = {"reassoc", "contract"}


@njit(fastmath=FASTMATH, cache=True, nogil=True, inline="always")
def rows_dot(w: np.ndarray, n: int, x: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """out[:, n] = x[M, K] @ w[n, K]: weight row n against every row of x, two rows at a time
    (each weight value loaded once for both: 10-15% faster than a row at a time)."""
    rows, k_in = x.shape
    m = 0
    while m + 1 < rows:
        a0 = np.float32(0.0)
        a1 = np.float32(0.0)
        for k in range(k_in):
            wk = w[n, k]
            a0 += wk * x[m, k]
            a1 += wk * x[m + 1, k]
        out[m, n] = a0
        out[m + 1, n] = a1
        m += 2
    if m < rows:
        a0 = np.float32(0.0)
        for k in range(k_in):
            a0 += w[n, k] * x[m, k]
        out[m, n] = a0


@njit(fastmath=FASTMATH, cache=True, nogil=True)
def few_rows_gemm(w: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """out = x[M, K] @ w[N, K]^T (all float32, C-contiguous), on the calling thread."""
    for n in range(w.shape[0]):
        rows_dot(w, n, x, out)


@njit(parallel=True, fastmath=FASTMATH, cache=True, nogil=True)
def few_rows_gemm_parallel(w: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """out = x[M, K] @ w[N, K]^T, the outputs split across numba's threads."""
    for n in prange(w.shape[0]):
        rows_dot(w, n, x, out)
