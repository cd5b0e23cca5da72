"""Switches for Mimi's speedups. Each one changes how a result is computed, never what:
codes stay those of the plain path and audio within 1e-4 (tests/perf checks both), and each
can be turned off alone to measure what it brings (`benchmarks/test_bench_streaming.py`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch import nn

#: Convolutions with at least this many weights get the input-major layout (the wide,
#: low-rate ones whose streaming calls run as a GEMM of a few rows).
INPUT_MAJOR_MIN_CONV = 1 << 20


@dataclass(frozen=True)
class Speedups:
    """Which speedups a MimiModel uses. The defaults are those measured to pay on the
    project's machines; `input_major` is off by default (see its comment)."""

    matmul_conv: bool = True  # convs / transposed convs with <= 64 output steps as one GEMM
    # linear and wide conv weights stored input-major: GEMMs with few rows read them 2x faster
    # on the AMD EPYC machines of an earlier session (1.08x on streaming), but 0.86x on the
    # Intel Xeon ones of a later one, where MKL streams the default layout at full bandwidth
    input_major: bool = False
    cache_distances: bool = True  # the codebook side of the nearest-centroid GEMM built once
    kv_buffer: bool = True  # attention keys/values in preallocated buffers, not a concat per call
    # the few-row GEMMs (transformer linears, matmul_conv) through oneDNN with each weight
    # prepacked once: 1.3x (1 thread) to 2x (2 threads) faster weight reads than MKL on
    # the AMD EPYC machines; costs a second copy of those weights in memory
    packed_gemm: bool = True
    # the 1-4 row GEMMs (a streamed transformer call has 2) through a numba kernel that reads
    # the weights in place at the memory's pace: 1.2x on streaming with 1 thread, 1.05x with 2,
    # on the EPYC machine; needs numba (a dependency; where it is missing: the packed_gemm path)
    numba_gemm: bool = True
    # a streamed transformer call of 1-4 rows runs each layer as one numba kernel (norms,
    # GEMMs, RoPE, cache write, attention, GELU, residuals) instead of ~30 small PyTorch ops;
    # needs numba and kv_buffer (without either: the unfused layer)
    fused_layer: bool = True
    # a streamed frame's residual quantization (1-4 vectors through 8 codebooks) as one numba
    # kernel: the distance GEMMs at the memory's pace, no per-codebook PyTorch ops; needs numba
    fused_rvq: bool = True
    # the large weights (all a streamed frame streams through) in memory backed by 2 MiB
    # pages (Linux transparent huge pages, "madvise" or "always" mode): ~160 page-table
    # entries for ~330 MB instead of ~80,000; the numba GEMMs read a transformer's weights
    # 1.15x faster on the EPYC machine. Values and results unchanged; elsewhere a no-op
    huge_pages: bool = True
    # a streamed frame's convolutions of 5-4096 output steps (the SEANets' stride-1 and
    # downsampling convs) as a numba GEMM over overlapping windows of a time-major copy of
    # the input, instead of PyTorch's convolution (whose per-call setup costs as much as
    # the arithmetic at these sizes); needs numba
    numba_conv: bool = True
    # on numba_conv's path, the ELU before each SEANet convolution (every ELU there is one)
    # done in that path's input copy by a numba kernel that the compiler vectorises, instead
    # of PyTorch's ELU (a scalar expm1 per element here, ~1.6 ns with 2 threads): within
    # 0.88 ulp of the true value, as PyTorch's is within 0.75
    numba_elu: bool = True
    # a streamed call of a SEANet encoder or decoder as one numba call running its
    # convolutions and residual adds in turn, through numba_conv's own kernel code (same bits),
    # instead of ~15 calls from Python (~80 us of checks, views and dispatch each); needs
    # numba (without it, or where a layer does not fit: the layer-by-layer path)
    fused_seanet: bool = True

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The switch names, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def all(cls) -> "Speedups":
        """Every speedup on."""
        return cls(**{n: True for n in cls.names()})

    @classmethod
    def none(cls) -> "Speedups":
        """Every speedup off: the plain path."""
        return cls(**{n: False for n in cls.names()})

    def without(self, name: str) -> "Speedups":
        """These speedups with `name` turned off."""
        return self.toggled(name, False)

    def toggled(self, name: str, on: bool) -> "Speedups":
        """These speedups with `name` turned on or off."""
        if name not in self.names():
            raise ValueError(f"speedup {name!r}: expected one of {list(self.names())}")
        return dataclasses.replace(self, **{name: on})


def apply_speedups(model: nn.Module, speedups: Speedups) -> None:
    """Set the per-module switches of `model` (its convolutions, attentions and codebooks)."""
    from ..modules.conv import CausalConv1d, CausalConvTranspose1d
    from ..modules.gemm import Linear
    from ..modules.huge_pages import move_weights
    from ..modules.seanet import SeanetDecoder, SeanetEncoder
    from ..modules.transformer import SelfAttention, Transformer, TransformerLayer
    from ..quantization.codebook import Codebook
    from ..quantization.rvq import ResidualVQ

    for m in model.modules():
        if isinstance(m, nn.Linear) or (isinstance(m, CausalConv1d) and m.groups == 1
                                        and m.weight.numel() >= INPUT_MAJOR_MIN_CONV):
            _set_layout(m.weight, speedups.input_major)
        if isinstance(m, (CausalConv1d, CausalConvTranspose1d, Linear)):
            m.packed_gemm = speedups.packed_gemm
            m.numba_gemm = speedups.numba_gemm
        if isinstance(m, (CausalConv1d, CausalConvTranspose1d)):
            m.matmul_small = speedups.matmul_conv
            m.numba_conv = speedups.numba_conv
            m.numba_elu = speedups.numba_elu
            m.huge_pages = speedups.huge_pages
        elif isinstance(m, Codebook):
            m.cache_distances = speedups.cache_distances
            m.huge_pages = speedups.huge_pages
        elif isinstance(m, ResidualVQ):
            m.fused = speedups.fused_rvq
        elif isinstance(m, SelfAttention):
            m.kv_buffer = speedups.kv_buffer
        elif isinstance(m, Transformer):
            m.fused = speedups.fused_layer
        elif isinstance(m, TransformerLayer):
            m._fused_weights.forget()
        elif isinstance(m, (SeanetEncoder, SeanetDecoder)):
            m.fused = speedups.fused_seanet
            m._fused.forget()
    move_weights(model, speedups.huge_pages)


def _set_layout(w: nn.Parameter, input_major: bool) -> None:
    """Store w ([out, in] or [out, in, k]) with the output index fastest in memory, or back
    to contiguous. Same values and shape: only the strides change."""
    if w.device.type == "meta":
        return
    order = list(range(1, w.dim())) + [0]  # (in, [k,] out) in memory
    if input_major and w.is_contiguous():
        inv = [order.index(i) for i in range(w.dim())]
        w.data = w.data.permute(*order).contiguous().permute(*inv)
    elif not input_major and not w.is_contiguous():
        w.data = w.data.contiguous()
