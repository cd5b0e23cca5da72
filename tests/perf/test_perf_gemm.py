"""The `packed_gemm` speedup: oneDNN with prepacked weights computes the plain GEMM (to
rounding), follows weight changes, and stays out of the way where it does not apply; and the
float16-weight GEMMs of `gemm_precision = "fp16"` (the decoder's option)."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch.nn import functional as F

from mimi_codec.modules import gemm
from mimi_codec.modules.conv import CausalConv1d, CausalConvTranspose1d

pytestmark = pytest.mark.skipif(not gemm.available(), reason="this PyTorch build has no oneDNN")


def _linear(n_in: int = 64, n_out: int = 48, bias: bool = True) -> gemm.Linear:
    torch.manual_seed(0)
    lin = gemm.Linear(n_in, n_out, bias=bias)
    lin.packed_gemm = True
    return lin


@torch.no_grad()
@pytest.mark.parametrize("shape", [(1, 64), (2, 64), (1, 2, 64), (3, 5, 64)])
def test_packed_linear_equals_f_linear(shape) -> None:
    lin = _linear()
    x = torch.randn(*shape)
    out = lin(x)
    assert set(lin._packed._packed) == {"fp32"}  # the packed path ran
    torch.testing.assert_close(out, F.linear(x, lin.weight, lin.bias), atol=1e-6, rtol=1e-6)


@torch.no_grad()
def test_repacks_when_the_weight_changes() -> None:
    lin = _linear(bias=False)
    x = torch.randn(2, 64)
    first = lin(x)
    lin.weight.mul_(2)  # in place: the version counter moves
    torch.testing.assert_close(lin(x), 2 * first, atol=1e-6, rtol=1e-6)
    lin.load_state_dict({"weight": torch.zeros(48, 64)})
    assert torch.equal(lin(x), torch.zeros(2, 48))
    lin.weight = torch.nn.Parameter(torch.ones(48, 64))  # a new tensor altogether
    torch.testing.assert_close(lin(x), x.sum(-1, keepdim=True).expand(2, 48), atol=1e-5, rtol=1e-6)


def test_not_used_with_autograd_many_rows_or_other_dtypes() -> None:
    lin = _linear()
    x = torch.randn(2, 64, requires_grad=True)
    lin(x).sum().backward()  # autograd on: the plain op, gradients flow
    assert x.grad is not None and lin.weight.grad is not None
    assert not lin._packed._packed
    with torch.no_grad():
        lin(torch.randn(gemm.PACKED_MAX_ROWS + 1, 64))  # a whole-file sized call
        assert not lin._packed._packed
        lin.double()(torch.randn(2, 64, dtype=torch.float64))
        assert not lin._packed._packed
        lin.float()(torch.randn(gemm.PACKED_MAX_ROWS, 64))  # the largest call it serves
        assert lin._packed._packed


@torch.no_grad()
def test_copies_pack_again() -> None:
    lin = _linear()
    x = torch.randn(2, 64)
    ref = lin(x)
    for twin in (copy.deepcopy(lin), pickle.loads(pickle.dumps(lin))):
        assert not twin._packed._packed
        torch.testing.assert_close(twin(x), ref, atol=0, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("cin,cout,k,stride,steps", [(16, 24, 3, 1, 5), (32, 16, 16, 8, 2), (8, 32, 12, 6, 1)])
def test_packed_conv_and_transposed_conv(cin, cout, k, stride, steps) -> None:
    torch.manual_seed(0)
    conv = CausalConv1d(cin, cout, k, stride=stride)
    conv.matmul_small = True
    x = torch.randn(1, cin, steps * stride)
    ref = F.conv1d(F.pad(x, (conv.context, 0)), conv.weight, conv.bias, stride)
    conv.packed_gemm = True
    torch.testing.assert_close(conv(x), ref, atol=1e-5, rtol=1e-5)
    assert conv._packed._packed

    tr = CausalConvTranspose1d(cin, cout, 2 * stride, stride=stride)
    tr.matmul_small = tr.packed_gemm = True
    y = torch.randn(1, cin, steps)
    full = F.conv_transpose1d(y, tr.weight, tr.bias, stride)
    torch.testing.assert_close(tr(y), full[..., : steps * stride], atol=1e-5, rtol=1e-5)
    assert tr._packed._packed


fp16_only = pytest.mark.skipif(not gemm.fp16_available(), reason="this PyTorch build has no FBGEMM")


@fp16_only
@torch.no_grad()
@pytest.mark.parametrize("rows", [1, 2, 50])
def test_fp16_linear_reads_float16_weights(rows: int) -> None:
    lin = _linear()
    lin.gemm_precision = "fp16"
    x = torch.randn(rows, 64)
    out = lin(x)
    half = F.linear(x, lin.weight.half().float(), lin.bias)  # what float16 weights compute
    torch.testing.assert_close(out, half, atol=1e-5, rtol=1e-5)
    assert not torch.equal(out, F.linear(x, lin.weight, lin.bias))
    lin.bias.add_(1.0)  # the bias is packed with the weight: an edit must repack
    torch.testing.assert_close(lin(x), half + 1.0, atol=1e-5, rtol=1e-5)


def test_precision_checks(monkeypatch) -> None:
    with pytest.raises(ValueError, match=r"expected one of \['fp32', 'fp16'\]"):
        gemm.check_precision("bf16")
    monkeypatch.setattr(gemm, "fp16_available", lambda: False)
    with pytest.raises(ValueError, match="FBGEMM"):
        gemm.check_precision("fp16")
    assert gemm.check_precision("fp32") == "fp32"


numba_only = pytest.mark.skipif(gemm.numba_kernels() is None, reason="numba is not installed")


@numba_only
@torch.no_grad()
@pytest.mark.parametrize("shape", [(1, 64), (2, 64), (1, 2, 64), (4, 64)])
def test_numba_linear_equals_f_linear(shape) -> None:
    lin = _linear()
    lin.numba_gemm = True
    x = torch.randn(*shape)
    out = lin(x)
    assert set(lin._packed._packed) == {"numba"}
    torch.testing.assert_close(out, F.linear(x, lin.weight, lin.bias), atol=1e-6, rtol=1e-6)
    # the kernel reads the parameter itself: no copy, and an in-place edit is seen at once
    w = lin._packed._packed["numba"][1]
    assert w.ctypes.data == lin.weight.data_ptr()
    lin.weight.mul_(-1)
    torch.testing.assert_close(lin(x), F.linear(x, lin.weight, lin.bias), atol=1e-6, rtol=1e-6)


@numba_only
@torch.no_grad()
def test_numba_serves_few_rows_only_and_non_contiguous_inputs(monkeypatch) -> None:
    lin = _linear(bias=False)
    lin.numba_gemm = True
    x = torch.randn(64, 2).t()  # [2, 64], not contiguous
    torch.testing.assert_close(lin(x), F.linear(x, lin.weight), atol=1e-6, rtol=1e-6)
    lin(torch.randn(gemm.NUMBA_MAX_ROWS + 1, 64))  # more rows: the oneDNN packed path
    assert set(lin._packed._packed) == {"numba", "fp32"}
    lin._packed = gemm.PackedWeight()
    monkeypatch.setattr(gemm, "numba_kernels", lambda: None)  # numba missing: oneDNN
    lin(x)
    assert set(lin._packed._packed) == {"fp32"}


@numba_only
@torch.no_grad()
def test_numba_conv_and_transposed_conv() -> None:
    torch.manual_seed(0)
    conv = CausalConv1d(32, 16, 16, stride=8)
    conv.matmul_small = conv.numba_gemm = True
    x = torch.randn(1, 32, 16)  # 2 output steps
    ref = F.conv1d(F.pad(x, (conv.context, 0)), conv.weight, conv.bias, 8)
    torch.testing.assert_close(conv(x), ref, atol=1e-5, rtol=1e-5)
    assert set(conv._packed._packed) == {"numba"}
    tr = CausalConvTranspose1d(32, 16, 16, stride=8)
    tr.matmul_small = tr.numba_gemm = True
    y = torch.randn(1, 32, 2)
    full = F.conv_transpose1d(y, tr.weight, tr.bias, 8)
    torch.testing.assert_close(tr(y), full[..., :16], atol=1e-5, rtol=1e-5)
    assert set(tr._packed._packed) == {"numba"}
