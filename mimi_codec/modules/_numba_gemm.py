"""The numba kernel behind the `numba_gemm` speedup (imported only when numba is installed).

out[m, n] = sum_k W[n, k] X[m, k] for a few rows m: one pass over W, split across threads by
output n, each weight row read from memory once and reused from L1 for every m. It streams
the weights at the memory's own pace, which PyTorch's fp32 kernels do not on some CPUs
(docs/performance.md). Only reassociation and contraction are allowed to the compiler (a
vectorised sum, fused multiply-adds): fp32 results at rounding level from the plain GEMM.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, fastmath={"reassoc", "contract"}, cache=True, nogil=True)
def few_rows_gemm(w: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """out[M, N] = x[M, K] @ w[N, K]^T (all float32, C-contiguous)."""
    n_out, k_in = w.shape
    rows = x.shape[0]
    for n in prange(n_out):
        for m in range(rows):
            acc = np.float32(0.0)
            for k in range(k_in):
                acc += w[n, k] * x[m, k]
            out[m, n] = acc
