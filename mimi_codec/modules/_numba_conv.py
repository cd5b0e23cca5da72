"""The numba kernel behind the `numba_conv` speedup (imported only when numba is installed).

A streamed frame's SEANet convolutions have 5-2048 output steps and 32-1280 inputs per step:
too small for PyTorch's convolution to run near the CPU's pace, whose per-call setup costs
as much as the arithmetic there (docs/performance.md). With the input stored time-major
([T, C_in], channels fastest), output step m of a convolution with stride s and kernel k
reads the k * C_in contiguous numbers that start at m * s * C_in, so the convolution is a
GEMM whose rows are overlapping windows of one flat buffer, with no unfolded copy:

    out[b, m, n] = bias[n] + sum_j x[b, m * step + j] * w[n, j],   j < K = k * C_in

`w` is the weight as [C_out, k, C_in] flattened to [C_out, K]. The kernel takes 4 windows
by 2 weight rows at a time, each loaded value used for two or four products, the sums over j
vectorised. Only reassociation and contraction are allowed to the compiler: fp32 results at
rounding level from PyTorch's convolution.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._numba_gemm import FASTMATH


@njit(fastmath=FASTMATH, cache=True, nogil=True, inline="always")
def window_block(x: np.ndarray, step: int, w: np.ndarray, bias: np.ndarray, out: np.ndarray,
                 n: int, cols: int, m: int, rows: int) -> None:  # pragma: no cover
    """out[m:rows, n:n + cols] (cols is 1 or 2)."""
    k_in = w.shape[1]
    w0 = w[n]
    w1 = w[n + cols - 1]
    b0 = bias[n]
    b1 = bias[n + cols - 1]
    while m + 3 < rows:
        o = m * step
        x0 = x[o:o + k_in]
        x1 = x[o + step:o + step + k_in]
        x2 = x[o + 2 * step:o + 2 * step + k_in]
        x3 = x[o + 3 * step:o + 3 * step + k_in]
        a00 = np.float32(0.0)
        a01 = np.float32(0.0)
        a10 = np.float32(0.0)
        a11 = np.float32(0.0)
        a20 = np.float32(0.0)
        a21 = np.float32(0.0)
        a30 = np.float32(0.0)
        a31 = np.float32(0.0)
        for j in range(k_in):
            u = w0[j]
            v = w1[j]
            a00 += u * x0[j]
            a01 += v * x0[j]
            a10 += u * x1[j]
            a11 += v * x1[j]
            a20 += u * x2[j]
            a21 += v * x2[j]
            a30 += u * x3[j]
            a31 += v * x3[j]
        out[m, n] = a00 + b0
        out[m + 1, n] = a10 + b0
        out[m + 2, n] = a20 + b0
        out[m + 3, n] = a30 + b0
        if cols == 2:
            out[m, n + 1] = a01 + b1
            out[m + 1, n + 1] = a11 + b1
            out[m + 2, n + 1] = a21 + b1
            out[m + 3, n + 1] = a31 + b1
        m += 4
    while m < rows:
        o = m * step
        x0 = x[o:o + k_in]
        a00 = np.float32(0.0)
        a01 = np.float32(0.0)
        for j in range(k_in):
            a00 += w0[j] * x0[j]
            a01 += w1[j] * x0[j]
        out[m, n] = a00 + b0
        if cols == 2:
            out[m, n + 1] = a01 + b1
        m += 1


@njit(fastmath=FASTMATH, cache=True, nogil=True, inline="always")
def _tile(x: np.ndarray, step: int, w: np.ndarray, bias: np.ndarray, out: np.ndarray,
          row_tile: int, pair_tile: int, task: int) -> None:  # pragma: no cover
    """One task: a tile of `row_tile` windows of one batch item by `pair_tile` pairs of
    weight rows, each weight pair applied to all the tile's windows (from L1) in turn."""
    pairs = (w.shape[0] + 1) // 2
    row_tiles = (out.shape[1] + row_tile - 1) // row_tile
    pair_tiles = (pairs + pair_tile - 1) // pair_tile
    b = task // (row_tiles * pair_tiles)
    rt = task // pair_tiles % row_tiles
    pt = task % pair_tiles
    m0 = rt * row_tile
    m1 = min(m0 + row_tile, out.shape[1])
    xb = x[b]
    ob = out[b]
    for p in range(pt * pair_tile, min((pt + 1) * pair_tile, pairs)):
        window_block(xb, step, w, bias, ob, 2 * p, min(2, w.shape[0] - 2 * p), m0, m1)


@njit(fastmath=FASTMATH, cache=True, nogil=True)
def window_conv(x: np.ndarray, step: int, w: np.ndarray, bias: np.ndarray, out: np.ndarray,
                row_tile: int, pair_tile: int) -> None:  # pragma: no cover
    """out[B, M, N] = windows of x[B, L] (every `step` numbers) @ w[N, K]^T + bias[N], on
    the calling thread, in tiles of `row_tile` windows by `pair_tile` weight-row pairs."""
    tasks = x.shape[0] * -(-out.shape[1] // row_tile) * -(-((w.shape[0] + 1) // 2) // pair_tile)
    for task in range(tasks):
        _tile(x, step, w, bias, out, row_tile, pair_tile, task)


@njit(parallel=True, fastmath=FASTMATH, cache=True, nogil=True)
def window_conv_parallel(x: np.ndarray, step: int, w: np.ndarray, bias: np.ndarray, out: np.ndarray,
                         row_tile: int, pair_tile: int) -> None:  # pragma: no cover
    """`window_conv` with its tiles split across numba's threads."""
    tasks = x.shape[0] * -(-out.shape[1] // row_tile) * -(-((w.shape[0] + 1) // 2) // pair_tile)
    for task in prange(tasks):
        _tile(x, step, w, bias, out, row_tile, pair_tile, task)
