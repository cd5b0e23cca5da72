"""The numba kernel behind the `fused_seanet` speedup (imported only when numba is installed).

A streamed frame's SEANet encoder or decoder as one numba call: its ~15 convolutions,
transposed convolutions and residual adds run in turn on time-major arrays, each through
the very code of the `numba_conv` kernels (`_numba_conv._conv_step`, `_convtr_step`), so the
results are bit for bit those of the layer-by-layer numba path. What goes away is the Python
between them: ~80 us per convolution call on the project's machines (argument checks, the
operand cache's key, buffer allocation, tensor/array views, dispatch), ~3-5 ms a frame.

The layers come as a program (`fused_seanet.py` builds it): one row of `ops` per step, the
weights, biases and streaming states as slices of three flat float32 arrays, so every model
shares one compiled signature.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._numba_conv import _conv_step, _convtr_step
from ._numba_gemm import FASTMATH
from .fused_seanet import (B_OFF, C_OUT, CONV, ELU, KIND, PAIR_TILE, RES_BEGIN, RES_END, S_CH, S_LEN, S_OFF,
                           STRIDE, TAPS, W_COLS, W_OFF, W_ROWS)


@njit(fastmath=FASTMATH, cache=True, nogil=True, inline="always")
def _program(x, ops, alphas, replicate, weights, biases, states, row_tile, threaded):  # pragma: no cover
    skip = x
    for i in range(ops.shape[0]):
        kind = ops[i, KIND]
        if kind == RES_BEGIN:
            skip = x
            continue
        if kind == RES_END:  # x is the block's last conv output, a fresh array: add in place
            for b in range(x.shape[0]):
                for t in range(x.shape[1]):
                    for c in range(x.shape[2]):
                        x[b, t, c] += skip[b, t, c]
            continue
        batch, steps, chans = x.shape
        w = weights[ops[i, W_OFF]:ops[i, W_OFF] + ops[i, W_ROWS] * ops[i, W_COLS]].reshape(
            (ops[i, W_ROWS], ops[i, W_COLS]))
        bias = biases[ops[i, B_OFF]:ops[i, B_OFF] + ops[i, W_ROWS]]
        state = states[ops[i, S_OFF]:ops[i, S_OFF] + batch * ops[i, S_CH] * ops[i, S_LEN]].reshape(
            (batch, ops[i, S_CH], ops[i, S_LEN]))
        stride = ops[i, STRIDE]
        if kind == CONV:
            ctx = ops[i, S_LEN]
            out = np.empty((batch, (ctx + steps - ops[i, TAPS]) // stride + 1, ops[i, C_OUT]), np.float32)
            buf = np.empty((batch, ctx + steps, chans), np.float32)
            _conv_step(x, state, replicate[i] != 0, ops[i, ELU] != 0, alphas[i], buf, stride * chans, w, bias,
                       out, row_tile, ops[i, PAIR_TILE], threaded)
            x = out
        else:
            n, co = ops[i, TAPS], ops[i, C_OUT]
            buf = np.zeros((batch, steps + 2 * (n - 1), chans), np.float32)
            out = np.empty((batch, steps + n - 1, stride * co), np.float32)
            _convtr_step(x, ops[i, ELU] != 0, alphas[i], buf, w, bias, out, state, bias[:co], stride,
                         row_tile, ops[i, PAIR_TILE], threaded)
            x = out.reshape((batch, (steps + n - 1) * stride, co))[:, :steps * stride]
    return x


@njit(fastmath=FASTMATH, cache=True, nogil=True)
def run_program(x, ops, alphas, replicate, weights, biases, states, row_tile):  # pragma: no cover
    """Run a SEANet program on x [B, T, C] (time-major) on the calling thread; returns the
    last layer's output [B, T_out, C_out], time-major. `states` is updated in place."""
    return _program(x, ops, alphas, replicate, weights, biases, states, row_tile, False)


@njit(fastmath=FASTMATH, cache=True, nogil=True)
def run_program_parallel(x, ops, alphas, replicate, weights, biases, states, row_tile):  # pragma: no cover
    """`run_program` with the GEMMs and large ELUs across numba's threads."""
    return _program(x, ops, alphas, replicate, weights, biases, states, row_tile, True)


def build(parallel: bool) -> object:
    """The program kernel for `gemm.run_numba`: serial, or across numba's threads."""
    return run_program_parallel if parallel else run_program
