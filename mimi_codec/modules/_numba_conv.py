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
rounding level from PyTorch's convolution. A transposed convolution is the same GEMM with
the weight's taps regrouped by output phase (conv.py, `_window_convtr`).

`build(parallel)` gives the kernels a streamed call runs, each in one numba call (the
Python and dispatch around ~30 convolution calls per frame cost as much as small GEMMs):
the input copied time-major into a buffer (after the state's context rows), the ELU before
the conv applied there (`_numba_elu`), the state carried, the GEMM, and for a transposed
convolution the overlap with the previous call.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._numba_elu import elu, elu_parallel
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


@njit(fastmath=FASTMATH, cache=True, nogil=True)
def _copy_in(x: np.ndarray, buf: np.ndarray, at: int) -> None:  # pragma: no cover
    """buf[:, at:at + T] = x ([B, T, C], any strides)."""
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            row = buf[b, at + t]
            src = x[b, t]
            for c in range(x.shape[2]):
                row[c] = src[c]


@njit(fastmath=FASTMATH, cache=True, nogil=True)
def _carry(buf: np.ndarray, previous: np.ndarray, replicate: bool, steps: int) -> None:  # pragma: no cover
    """The conv state around buf [B, ctx + steps, C]: its first ctx rows from previous
    [B, C, ctx] (the first input row repeated there first, when `replicate`), then previous
    from its last ctx rows."""
    ctx = previous.shape[2]
    for b in range(buf.shape[0]):
        for j in range(ctx):
            row = buf[b, j]
            for c in range(buf.shape[2]):
                if replicate:
                    previous[b, c, j] = buf[b, ctx, c]
                row[c] = previous[b, c, j]
        for j in range(ctx):
            row = buf[b, steps + j]
            for c in range(buf.shape[2]):
                previous[b, c, j] = row[c]


@njit(fastmath=FASTMATH, cache=True, nogil=True)
def _overlap(y: np.ndarray, partial: np.ndarray, bias: np.ndarray, end: int) -> None:  # pragma: no cover
    """A transposed conv's overlap on y [B, L, C_out] (time-major): its first pt rows get
    partial [B, C_out, pt]; partial becomes rows end..end+pt-1 less the bias."""
    pt = partial.shape[2]
    for b in range(y.shape[0]):
        for j in range(pt):
            for c in range(y.shape[2]):
                y[b, j, c] += partial[b, c, j]
        for j in range(pt):
            for c in range(y.shape[2]):
                partial[b, c, j] = y[b, end + j, c] - bias[c]


#: ELUs of at least this many elements split across threads (in the parallel build).
ELU_PARALLEL_FROM = 32768


@njit(fastmath=FASTMATH, cache=True, nogil=True, inline="always")
def _elu_rows(buf: np.ndarray, at: int, steps: int, alpha: float, threaded: bool) -> None:  # pragma: no cover
    """ELU in place on rows at..at+steps-1 of each batch item of buf [B, L, C] (C-contiguous);
    the large ones across numba's threads when `threaded`."""
    flat = buf.reshape(-1)
    span = buf.shape[1] * buf.shape[2]
    for b in range(buf.shape[0]):
        rows = flat[b * span + at * buf.shape[2]: b * span + (at + steps) * buf.shape[2]]
        if threaded and rows.shape[0] >= ELU_PARALLEL_FROM:
            elu_parallel(rows, alpha, rows)
        else:
            elu(rows, alpha, rows)


@njit(fastmath=FASTMATH, cache=True, nogil=True, inline="always")
def _gemm(buf, step, w, bias, out, row_tile, pair_tile, threaded):  # pragma: no cover
    """The window GEMM over buf [B, L, C] (C-contiguous), across numba's threads if `threaded`."""
    flat = buf.reshape((buf.shape[0], -1))
    if threaded:
        window_conv_parallel(flat, step, w, bias, out, row_tile, pair_tile)
    else:
        window_conv(flat, step, w, bias, out, row_tile, pair_tile)


@njit(fastmath=FASTMATH, cache=True, nogil=True, inline="always")
def _conv_step(x, previous, replicate, use_elu, alpha, buf, step, w, bias, out, row_tile, pair_tile,
               threaded):  # pragma: no cover
    ctx = previous.shape[2]
    steps = x.shape[1]
    _copy_in(x, buf, ctx)
    if use_elu:
        _elu_rows(buf, ctx, steps, alpha, threaded)
    _carry(buf, previous, replicate, steps)
    _gemm(buf, step, w, bias, out, row_tile, pair_tile, threaded)


@njit(fastmath=FASTMATH, cache=True, nogil=True, inline="always")
def _convtr_step(x, use_elu, alpha, buf, w, bias, out, partial, out_bias, stride, row_tile, pair_tile,
                 threaded):  # pragma: no cover
    steps = x.shape[1]
    n = (buf.shape[1] - steps) // 2 + 1
    _copy_in(x, buf, n - 1)
    if use_elu:
        _elu_rows(buf, n - 1, steps, alpha, threaded)
    _gemm(buf, buf.shape[2], w, bias, out, row_tile, pair_tile, threaded)
    _overlap(out.reshape((out.shape[0], -1, partial.shape[1])), partial, out_bias, steps * stride)


@njit(fastmath=FASTMATH, cache=True, nogil=True)
def conv_step(x, previous, replicate, use_elu, alpha, buf, step, w, bias, out, row_tile,
              pair_tile):  # pragma: no cover
    """A streamed CausalConv1d call, on the calling thread: buf [B, ctx + T, C] = [state,
    ELU(x) if use_elu], the state carried (`replicate`: the first input row fills it first),
    out [B, T_out, C_out] = the window GEMM over buf. x: [B, T, C], any strides."""
    _conv_step(x, previous, replicate, use_elu, alpha, buf, step, w, bias, out, row_tile, pair_tile, False)


@njit(fastmath=FASTMATH, cache=True, nogil=True)
def conv_step_parallel(x, previous, replicate, use_elu, alpha, buf, step, w, bias, out, row_tile,
                       pair_tile):  # pragma: no cover
    """`conv_step` with the GEMM and large ELUs across numba's threads."""
    _conv_step(x, previous, replicate, use_elu, alpha, buf, step, w, bias, out, row_tile, pair_tile, True)


@njit(fastmath=FASTMATH, cache=True, nogil=True)
def convtr_step(x, use_elu, alpha, buf, w, bias, out, partial, out_bias, stride, row_tile,
                pair_tile):  # pragma: no cover
    """A streamed CausalConvTranspose1d call, on the calling thread: buf [B, T + 2(n-1), C]
    (zeros) gets ELU?(x) at rows n-1.., out [B, T + n - 1, stride * C_out] = the window GEMM
    over it, whose time-major rows then take and give the overlap (`partial`, [B, C_out, pt])."""
    _convtr_step(x, use_elu, alpha, buf, w, bias, out, partial, out_bias, stride, row_tile, pair_tile, False)


@njit(fastmath=FASTMATH, cache=True, nogil=True)
def convtr_step_parallel(x, use_elu, alpha, buf, w, bias, out, partial, out_bias, stride, row_tile,
                         pair_tile):  # pragma: no cover
    """`convtr_step` with the GEMM and large ELUs across numba's threads."""
    _convtr_step(x, use_elu, alpha, buf, w, bias, out, partial, out_bias, stride, row_tile, pair_tile, True)


def build(parallel: bool) -> tuple[object, object]:
    """(conv_step, convtr_step) for `gemm.run_numba`: serial, or across numba's threads.
    Module-level functions, not closures, so numba's on-disk cache keeps them between
    processes."""
    return (conv_step_parallel, convtr_step_parallel) if parallel else (conv_step, convtr_step)

