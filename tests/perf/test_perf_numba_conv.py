"""The `numba_conv` speedup: streamed convolutions and transposed convolutions as the numba
window GEMM compute what PyTorch's ops compute (at rounding level), carry the same state
across calls, and stay out of the calls they do not serve."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from mimi_codec.modules import conv as conv_mod
from mimi_codec.modules import gemm
from mimi_codec.modules.conv import CausalConv1d, CausalConvTranspose1d

numba_only = pytest.mark.skipif(conv_mod._step_kernels() is None, reason="numba is not installed")
pytestmark = [numba_only, pytest.mark.usefixtures("threads")]


def _pair(cls, *args, **kwargs):
    """Two copies of one module, the second with numba_conv on."""
    torch.manual_seed(0)
    ref = cls(*args, **kwargs)
    fast = cls(*args, **kwargs)
    fast.load_state_dict(ref.state_dict())
    fast.numba_conv = True
    return ref, fast


def _counting(monkeypatch, elus: list[bool] | None = None) -> list[int]:
    """Count the window GEMM kernels' runs by output rows (so a test fails if the fast path
    quietly did not run), and note in `elus` whether each applied an ELU."""
    runs: list[int] = []
    serial, parallel = conv_mod._step_kernels()

    def count(kernel, out_at, elu_at):
        def run(*args):
            runs.append(args[out_at].shape[1])
            if elus is not None:
                elus.append(args[elu_at])
            return kernel(*args)
        return run

    def counted(kernels):
        return count(kernels[0], 9, 3), count(kernels[1], 6, 1)

    monkeypatch.setattr(conv_mod, "_step_kernels", lambda: (counted(serial), counted(parallel)))
    return runs


@pytest.mark.parametrize("cin,cout,k,stride,steps,pad_mode", [
    (64, 32, 3, 1, 1920, "constant"),  # a residual block's first conv, full frame
    (32, 64, 1, 1, 480, "constant"),   # its 1x1 conv (no context)
    (64, 128, 8, 4, 120, "replicate"),  # a downsampling conv, replicate padding
    (256, 512, 12, 6, 16, "constant"),
    (64, 1, 3, 1, 96, "constant"),     # one output channel (an odd weight row)
    (48, 7, 5, 1, 13, "replicate"),    # odd everything: tails of the 4-row and tile loops
    (1, 64, 7, 1, 1920, "constant"),   # the encoder's first conv: a window of 7 numbers
    (512, 1024, 16, 8, 2, "constant"),  # a wide, weight-bound layer's 2 steps
    (1024, 512, 3, 1, 1, "constant"),
])
@torch.no_grad()
def test_streamed_conv_equals_conv1d(monkeypatch, cin, cout, k, stride, steps, pad_mode) -> None:
    ref, fast = _pair(CausalConv1d, cin, cout, k, stride=stride, pad_mode=pad_mode)
    runs = _counting(monkeypatch)
    ref_state, fast_state = ref.init_state(2), fast.init_state(2)
    for call in range(3):
        x = torch.randn(2, cin, steps * stride)
        want, got = ref(x, ref_state), fast(x, fast_state)
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(fast_state.previous, ref_state.previous, atol=0, rtol=0)
        assert got.stride()[1] == 1  # time-major: the window GEMM's output, not F.conv1d's
    assert runs == [steps] * 3
    # the whole-input path: a fresh state is the causal padding
    x = torch.randn(1, cin, steps * stride)
    padded = F.pad(x, (ref.context, 0), mode="replicate" if pad_mode == "replicate" else "constant")
    torch.testing.assert_close(fast(x), F.conv1d(padded, ref.weight, ref.bias, stride), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("cin,cout,stride,steps", [(128, 64, 4, 480), (256, 128, 5, 96), (512, 256, 6, 16),
                                                   (1024, 512, 8, 2), (40, 3, 2, 9), (32, 16, 2, 1)])
@torch.no_grad()
def test_streamed_transposed_conv_equals_conv_transpose(monkeypatch, cin, cout, stride, steps) -> None:
    ref, fast = _pair(CausalConvTranspose1d, cin, cout, 2 * stride, stride=stride)
    runs = _counting(monkeypatch)
    ref_state, fast_state = ref.init_state(2), fast.init_state(2)
    xs = [torch.randn(2, cin, steps) for _ in range(3)]
    for x in xs:
        want, got = ref(x, ref_state), fast(x, fast_state)
        assert got.shape == (2, cout, steps * stride)
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(fast_state.partial, ref_state.partial, atol=2e-5, rtol=1e-5)
    assert runs == [steps + 1] * 3  # T + n - 1 windows, n = 2
    # the three calls together are one transposed convolution of the whole input
    whole = F.conv_transpose1d(torch.cat(xs, -1), ref.weight, ref.bias, stride)
    got = torch.cat([fast(x, s) for s in [fast.init_state(2)] for x in xs], -1)
    torch.testing.assert_close(got, whole[..., :3 * steps * stride], atol=2e-5, rtol=1e-5)


@torch.no_grad()
def test_the_state_carries_over_between_the_fast_and_plain_paths() -> None:
    ref, fast = _pair(CausalConvTranspose1d, 64, 32, 8, stride=4)
    cref, cfast = _pair(CausalConv1d, 64, 32, 3)
    for a, b in ((ref, fast), (cref, cfast)):
        sa, sb = a.init_state(1), b.init_state(1)
        for i in range(4):
            x = torch.randn(1, 64, 40)
            b.numba_conv = i % 2 == 0  # alternate the paths on one stream
            torch.testing.assert_close(b(x, sb), a(x, sa), atol=2e-5, rtol=1e-5)


@torch.no_grad()
def test_rebuilds_its_weights_after_an_edit() -> None:
    ref, fast = _pair(CausalConv1d, 64, 32, 3)
    x = torch.randn(1, 64, 20)
    fast(x)
    for m in (ref, fast):
        m.weight.mul_(-2)
        m.bias.add_(1)
    torch.testing.assert_close(fast(x), ref(x), atol=2e-5, rtol=1e-5)


def test_stays_out_of_the_calls_it_does_not_serve(monkeypatch) -> None:
    runs = _counting(monkeypatch)
    cases = [
        (CausalConv1d(64, 32, 3), torch.randn(1, 64, conv_mod.NUMBA_CONV_STEPS.stop)),  # whole-file size
        (CausalConv1d(64, 32, 3, dilation=2), torch.randn(1, 64, 20)),  # windows not contiguous
        (CausalConv1d(64, 32, 3, groups=2), torch.randn(1, 64, 20)),
        (CausalConv1d(64, 32, 3), torch.randn(1, 64, 20, dtype=torch.float64)),
        (CausalConvTranspose1d(64, 32, 7, stride=4), torch.randn(1, 64, 20)),  # K not n * stride
    ]
    for m, x in cases:
        m.numba_conv = True
        m.to(x.dtype)
        with torch.no_grad():
            m(x)
    m = CausalConv1d(64, 32, 3)
    m.numba_conv = True
    m(torch.randn(1, 64, 20))  # autograd on
    with torch.no_grad(), gemm.numba_paused():  # whole-file coding
        m(torch.randn(1, 64, 20))
    m.gemm_precision = "fp16"
    with torch.no_grad():
        m(torch.randn(1, 64, 20))
    assert runs == []
    m.gemm_precision = "fp32"
    with torch.no_grad():
        m(torch.randn(1, 64, 20))
    assert runs == [20]
    m.gemm_precision = "fp16"  # the decoder option: its float16 weights serve the short calls only,
    with torch.no_grad():  # so a long one (fp32 in PyTorch) still takes the window GEMM
        m(torch.randn(1, 64, conv_mod.MATMUL_MAX_STEPS + 1))
    assert runs == [20, conv_mod.MATMUL_MAX_STEPS + 1]


@pytest.mark.parametrize("row_tile,pair_tile", [(64, 100), (4, 1), (5, 3), (1000, 1)])
def test_window_kernel_tiles(row_tile, pair_tile) -> None:
    rng = np.random.default_rng(0)
    B, M, N, K, step = 2, 37, 11, 40, 8
    x = rng.standard_normal((B, (M - 1) * step + K), dtype=np.float32)
    w = rng.standard_normal((N, K), dtype=np.float32)
    bias = rng.standard_normal(N, dtype=np.float32)
    windows = np.stack([x[:, m * step:m * step + K] for m in range(M)], 1)  # [B, M, K]
    want = windows.astype(np.float64) @ w.T.astype(np.float64) + bias
    out = np.full((B, M, N), np.nan, dtype=np.float32)
    from mimi_codec.modules._numba_conv import window_conv, window_conv_parallel

    gemm.run_numba(window_conv, window_conv_parallel, x, step, w, bias, out, row_tile, pair_tile)
    np.testing.assert_allclose(out, want, atol=1e-4, rtol=1e-5)


def test_numba_elu_is_within_one_ulp_of_the_true_value() -> None:
    from mimi_codec.modules._numba_elu import elu, elu_parallel

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(200_000).astype(np.float32) * s for s in (1e-3, 0.3, 1, 4, 30)]
                       + [-np.logspace(-30, 2, 20_000).astype(np.float32)])
    exact = np.where(x > 0, x.astype(np.float64), np.expm1(x.astype(np.float64)))
    for kernel in (elu, elu_parallel):
        out = np.empty_like(x)
        kernel(x, 1.0, out)
        ulps = np.abs(out.astype(np.float64) - exact) / np.spacing(np.abs(out)).astype(np.float64)
        assert ulps.max() < 1.0
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -200.0, 3.0], dtype=np.float32)
    out = np.empty_like(special)
    elu(special, 0.5, out)  # another alpha; in place works too
    np.testing.assert_array_equal(out, [0.0, -0.0, np.inf, -0.5, np.nan, -0.5, 3.0])
    assert np.signbit(out[1])
    elu(special, 0.5, special)
    np.testing.assert_array_equal(special, out)


@pytest.mark.parametrize("cls,args,steps", [(CausalConv1d, (64, 32, 3), 1920),
                                            (CausalConv1d, (64, 128, 8, 4), 30),
                                            (CausalConvTranspose1d, (128, 64, 8, 4), 480)])
@pytest.mark.parametrize("numba_elu", [True, False])
@torch.no_grad()
def test_the_elu_before_a_conv_is_fused_into_its_input_copy(monkeypatch, cls, args, steps, numba_elu) -> None:
    ref, fast = _pair(cls, *args, **({"pad_mode": "replicate"} if cls is CausalConv1d else {}))
    fast.numba_elu = numba_elu
    elus: list[bool] = []
    runs = _counting(monkeypatch, elus)
    ref_state, fast_state = ref.init_state(1), fast.init_state(1)
    for _ in range(3):
        x = torch.randn(1, args[0], steps * (args[3] if len(args) > 3 and cls is CausalConv1d else 1)) * 3
        want = ref(torch.nn.functional.elu(x), ref_state)
        torch.testing.assert_close(fast(x, fast_state, elu=1.0), want, atol=2e-5, rtol=1e-5)
    assert len(runs) == 3 and elus == [numba_elu] * 3  # in the kernel, or by PyTorch before it

