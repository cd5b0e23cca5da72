"""The numba kernel behind the `numba_gemm` speedup (imported only when numba is installed).

out[m, n] = sum_k W[n, k] X[m, k] for a few rows m and the outputs n in [start, stop): one
pass over those weight rows, each read from memory once and reused from L1 for every m. It
streams the weights at the memory's own pace, which PyTorch's fp32 kernels do not on some
CPUs (docs/performance.md). With one thread the caller runs `few_rows_gemm` (numba starts
no thread pool); with more, `few_rows_gemm_parallel`, whose outputs numba's own pool splits
(a split over Python threads measured slower: torch's spinning OpenMP workers hold the other
core). Only
reassociation and contraction are allowed to the compiler (a vectorised sum, fused
multiply-adds): fp32 results at rounding level from the plain GEMM.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(fastmath={"reassoc", "contract"}, cache=True, nogil=True)
def few_rows_gemm(w: np.ndarray, x: np.ndarray, out: np.ndarray, start: int, stop: int) -> None:  # pragma: no cover
    """out[:, start:stop] = x[M, K] @ w[start:stop, K]^T (all float32, C-contiguous)."""
    k_in = w.shape[1]
    rows = x.shape[0]
    for n in range(start, stop):
        for m in range(rows):
            acc = np.float32(0.0)
            for k in range(k_in):
                acc += w[n, k] * x[m, k]
            out[m, n] = acc


@njit(parallel=True, fastmath={"reassoc", "contract"}, cache=True, nogil=True)
def few_rows_gemm_parallel(w: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """out = x[M, K] @ w[N, K]^T, the outputs split across numba's threads."""
    n_out, k_in = w.shape
    rows = x.shape[0]
    for n in prange(n_out):
        for m in range(rows):
            acc = np.float32(0.0)
            for k in range(k_in):
                acc += w[n, k] * x[m, k]
            out[m, n] = acc
