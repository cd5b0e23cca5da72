"""The ELU of the `numba_elu` speedup (imported only when numba is installed): the SEANets' ELU
before each convolution, applied by `_numba_conv`'s kernels to their input copy.

ELU(x) = x for x > 0, alpha * (e^x - 1) otherwise. PyTorch's CPU ELU calls a scalar expm1
per element here (1.6-3 ns each: ~2.6 ms of a streamed frame's SEANets). This one is
arithmetic the compiler vectorises, 8 floats at a time, in three passes over chunks of
`CHUNK` elements (numba has no scalar bit cast, so the exponent is built in an int32 array
viewed as float32):

1. x clamped to >= -30 (below, e^x - 1 rounds to -1); k = round(x / ln 2) by the
   1.5 * 2^23 rounding trick; r = x - k ln 2 in two parts (Cody-Waite), |r| <= ln2 / 2;
   e^r - 1 by its Taylor series to r^8 (truncation < 2^-27 relative);
2. the bits of 2^k: (k + 127) << 23;
3. e^x - 1 = 2^k (e^r - 1) + (2^k - 1), one fused multiply-add (2^k - 1 is exact).

Within 2 ulp of the true value everywhere (PyTorch's is within 1; the tests measure both).
Compiled without reassociation, which would undo the rounding trick.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

#: Elements per pass (the three scratch arrays stay in L1).
CHUNK = 1024
#: Contraction only: (v + M) - M must round v to an integer, not fold to v.
FAST = {"contract"}

_ROUND = np.float32(12582912.0)  # 1.5 * 2^23
_ROUND_BITS = np.int32(0x4B400000)  # its bit pattern: the low bits of v + _ROUND hold round(v)
_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693145751953125)  # 15 significant bits: k * _LN2_HI is exact
_LN2_LO = np.float32(1.4286068203094173e-06)


@njit(fastmath=FAST, cache=True, nogil=True, inline="always")
def _chunk(x: np.ndarray, alpha: np.float32, out: np.ndarray, start: int, stop: int,
           poly: np.ndarray, rounded: np.ndarray, kept: np.ndarray) -> None:  # pragma: no cover
    xs = x[start:stop]  # slices: indices from range() need no wraparound checks, so loops vectorise
    os = out[start:stop]
    n = stop - start
    for i in range(n):
        kept[i] = xs[i]  # the last pass reads this copy: out may be x, which would stop it vectorising
        d = max(xs[i], np.float32(-30.0))
        t = d * _LOG2E + _ROUND
        k = t - _ROUND
        r = d - k * _LN2_HI
        r = r - k * _LN2_LO
        q = np.float32(1.0 / 40320.0)
        q = np.float32(1.0 / 5040.0) + r * q
        q = np.float32(1.0 / 720.0) + r * q
        q = np.float32(1.0 / 120.0) + r * q
        q = np.float32(1.0 / 24.0) + r * q
        q = np.float32(1.0 / 6.0) + r * q
        q = np.float32(0.5) + r * q
        poly[i] = r + r * r * q
        rounded[i] = t
    bits = rounded.view(np.int32)
    for i in range(n):
        bits[i] = (bits[i] - _ROUND_BITS + np.int32(127)) << np.int32(23)
    scale = bits.view(np.float32)
    for i in range(n):
        v = kept[i]
        s = scale[i]
        e = s * poly[i] + (s - np.float32(1.0))
        os[i] = v if v >= np.float32(0.0) else alpha * e


@njit(fastmath=FAST, cache=True, nogil=True)
def elu(x: np.ndarray, alpha: float, out: np.ndarray) -> None:  # pragma: no cover
    """out[i] = ELU(x[i]) for 1-d float32 arrays (out may be x), on the calling thread."""
    poly = np.empty(CHUNK, dtype=np.float32)
    rounded = np.empty(CHUNK, dtype=np.float32)
    kept = np.empty(CHUNK, dtype=np.float32)
    a = np.float32(alpha)
    for c in range(0, x.shape[0], CHUNK):
        _chunk(x, a, out, c, min(x.shape[0], c + CHUNK), poly, rounded, kept)


@njit(parallel=True, fastmath=FAST, cache=True, nogil=True)
def elu_parallel(x: np.ndarray, alpha: float, out: np.ndarray) -> None:  # pragma: no cover
    """`elu` with its chunks split across numba's threads."""
    a = np.float32(alpha)
    chunks = (x.shape[0] + CHUNK - 1) // CHUNK
    for c in prange(chunks):
        poly = np.empty(CHUNK, dtype=np.float32)
        rounded = np.empty(CHUNK, dtype=np.float32)
        kept = np.empty(CHUNK, dtype=np.float32)
        _chunk(x, a, out, c * CHUNK, min(x.shape[0], (c + 1) * CHUNK), poly, rounded, kept)
