"""The numba kernel behind the `fused_layer` speedup (imported only when numba is installed).

One call runs a whole transformer layer on the 1-4 rows of a streamed call: LayerNorm, the
q/k/v projection, RoPE, the write of the new keys and values into the layer's cache, masked
attention, the output projection, layer scale and residual, then LayerNorm, linear, GELU,
linear, layer scale and residual. In PyTorch that is about 30 small ops and 4 GEMMs per
layer, each paying its dispatch and thread wake-up for a few thousand numbers (a streamed
frame's two transformers spent ~13 ms of ~36 outside their GEMMs); here it is one call.

The GEMMs are the `numba_gemm` kernel's (`rows_dot`): each weight row read once, for every
row of activations. Attention takes its scores the same way, each cached key against the
call's queries. `build(parallel)` compiles the same code twice: with numba's thread pool
splitting each GEMM's outputs and the attention's heads, or serial for a 1-thread budget.
Only reassociation and contraction are allowed to the compiler; LayerNorm statistics are
taken in float64. Results are fp32 at rounding level from the PyTorch ops.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from numba import njit, prange

from ._numba_gemm import FASTMATH, rows_dot


@njit(fastmath=FASTMATH, cache=True, nogil=True)
def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:  # pragma: no cover
    """[R, C] -> [R, C]: (x - mean) / sqrt(var + eps) * w + b over each row."""
    rows, c = x.shape
    out = np.empty_like(x)
    for r in range(rows):
        s = 0.0
        for i in range(c):
            s += x[r, i]
        mean = s / c
        v = 0.0
        for i in range(c):
            d = x[r, i] - mean
            v += d * d
        rstd = 1.0 / math.sqrt(v / c + eps)
        for i in range(c):
            out[r, i] = np.float32((x[r, i] - mean) * rstd) * w[i] + b[i]
    return out


def build(parallel: bool) -> Callable[..., np.ndarray]:
    """The layer kernel, with numba's parallel loops (`parallel`) or serial."""

    @njit(parallel=parallel, fastmath=FASTMATH, cache=True, nogil=True)
    def layer_step(x, steps, ln1_w, ln1_b, w_qkv, offset, freqs, key_buf, value_buf, first, end,
                   context, w_out, ls1, ln2_w, ln2_b, w_1, w_2, ls2, eps):  # pragma: no cover
        """One layer on x [R, C] (R = B * steps, batch-major); returns the new [R, C].

        offset: position of the call's first step. freqs: [D / 2] rotary frequencies (pair i
        of step t turns by (offset + t) * freqs[i]). key_buf, value_buf: [B, H, capacity, D];
        the new keys and values go to slots end..end+steps-1, attention reads slots first..end+steps-1
        (the last `steps` being this call's). context: attention span, <= 0 for none.
        """
        threaded = parallel  # noqa: F841  (keeps the two builds apart in numba's cache)
        rows, c = x.shape
        batch, heads, _, d = key_buf.shape
        f = w_1.shape[0]
        h = layer_norm(x, ln1_w, ln1_b, eps)
        qkv = np.empty((rows, 3 * c), np.float32)
        for n in prange(3 * c):
            rows_dot(w_qkv, n, h, qkv)
        # RoPE on q and k (interleaved pairs), new keys and values into the cache
        q = np.empty((rows, c), np.float32)
        cos = np.empty((steps, d // 2), np.float32)
        sin = np.empty((steps, d // 2), np.float32)
        for t in range(steps):
            for i in range(d // 2):
                angle = np.float32(offset + t) * freqs[i]
                cos[t, i] = np.cos(angle)
                sin[t, i] = np.sin(angle)
        for r in range(rows):
            b, t = r // steps, r % steps
            for hh in range(heads):
                o = hh * d
                for i in range(d // 2):
                    re, im = qkv[r, o + 2 * i], qkv[r, o + 2 * i + 1]
                    q[r, o + 2 * i] = re * cos[t, i] - im * sin[t, i]
                    q[r, o + 2 * i + 1] = im * cos[t, i] + re * sin[t, i]
                    re, im = qkv[r, c + o + 2 * i], qkv[r, c + o + 2 * i + 1]
                    key_buf[b, hh, end + t, 2 * i] = re * cos[t, i] - im * sin[t, i]
                    key_buf[b, hh, end + t, 2 * i + 1] = im * cos[t, i] + re * sin[t, i]
                for i in range(d):
                    value_buf[b, hh, end + t, i] = qkv[r, 2 * c + o + i]
        # attention over slots first..end+steps-1; query t sits at slot end + t and sees the
        # slots lo..end+t (within `context` steps of it)
        scale = np.float32(1.0 / math.sqrt(d))
        att = np.empty((rows, c), np.float32)
        for bh in prange(batch * heads):
            b, hh = bh // heads, bh % heads
            o = hh * d
            keys, values = key_buf[b, hh], value_buf[b, hh]
            qh = np.empty((steps, d), np.float32)
            for t in range(steps):
                for i in range(d):
                    qh[t, i] = q[b * steps + t, o + i]
            scores = np.empty((steps, keys.shape[0]), np.float32)
            for j in range(first, end + steps):
                rows_dot(keys, j, qh, scores)
            acc = np.zeros((steps, d), np.float32)
            for t in range(steps):
                lo = max(first, end + t - context + 1) if context > 0 else first
                top = np.float32(-np.inf)
                for j in range(lo, end + t + 1):
                    scores[t, j] *= scale
                    top = max(top, scores[t, j])
                total = np.float32(0.0)
                for j in range(lo, end + t + 1):
                    e = np.exp(scores[t, j] - top)
                    scores[t, j] = e
                    total += e
                for j in range(lo, end + t + 1):
                    pj = scores[t, j]
                    for i in range(d):
                        acc[t, i] += pj * values[j, i]
                inv = np.float32(1.0) / total
                for i in range(d):
                    att[b * steps + t, o + i] = acc[t, i] * inv
        x1 = np.empty((rows, c), np.float32)
        for n in prange(c):
            rows_dot(w_out, n, att, x1)
            for r in range(rows):
                x1[r, n] = x[r, n] + ls1[n] * x1[r, n]
        h = layer_norm(x1, ln2_w, ln2_b, eps)
        hidden = np.empty((rows, f), np.float32)
        for n in prange(f):
            rows_dot(w_1, n, h, hidden)
            for r in range(rows):
                a = hidden[r, n]
                hidden[r, n] = np.float32(0.5) * a * (np.float32(1.0) + math.erf(a * np.float32(0.7071067811865476)))
        out = np.empty((rows, c), np.float32)
        for n in prange(c):
            rows_dot(w_2, n, hidden, out)
            for r in range(rows):
                out[r, n] = x1[r, n] + ls2[n] * out[r, n]
        return out

    return layer_step
