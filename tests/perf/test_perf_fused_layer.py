"""The `fused_layer` speedup: a streamed transformer call of 1-4 rows through the numba layer
kernel computes what the PyTorch layers compute (outputs and kept keys/values, to rounding),
follows weight changes, and stays out of the way where it does not apply."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

from mimi_codec.config import TransformerConfig
from mimi_codec.modules import fused_layer
from mimi_codec.modules.transformer import Transformer

pytestmark = pytest.mark.skipif(fused_layer.kernels() is None, reason="numba is not installed")


def _pair(**cfg: object) -> tuple[Transformer, Transformer]:
    """(fused, plain) copies of one small random transformer, kv buffers on."""
    base = dict(d_model=64, num_heads=4, num_layers=3, context=6, dim_feedforward=96,
                input_dimension=64, output_dimensions=(64,))
    base.update(cfg)
    torch.manual_seed(0)
    fused = Transformer(TransformerConfig(**base)).eval()
    with torch.no_grad():  # layer scales away from 0.01 so that every branch counts
        for p in fused.parameters():
            if p.dim() == 1:
                p.add_(torch.rand_like(p))
    for m in fused.modules():
        if hasattr(m, "kv_buffer"):
            m.kv_buffer = True
    plain = copy.deepcopy(fused)
    fused.fused, plain.fused = True, False
    return fused, plain


def _count_kernel_calls(monkeypatch) -> list[int]:
    calls: list[int] = []
    run = fused_layer.gemm.run_numba

    def counting(*args: object) -> object:
        calls.append(1)
        return run(*args)

    monkeypatch.setattr(fused_layer.gemm, "run_numba", counting)
    return calls


@torch.no_grad()
@pytest.mark.parametrize("batch,steps", [(1, 1), (1, 2), (1, 3), (2, 2), (1, 4)])
@pytest.mark.parametrize("ring", [False, True])
def test_fused_calls_equal_the_pytorch_layers(monkeypatch, threads, batch, steps, ring) -> None:
    fused, plain = _pair()
    calls = _count_kernel_calls(monkeypatch)
    sf, sp = fused.init_state(batch, ring), plain.init_state(batch, ring)
    for i in range(12):  # past the context (6) and through several buffer moves
        x = torch.randn(batch, 64, steps)
        torch.testing.assert_close(fused(x, sf), plain(x, sp), atol=1e-5, rtol=1e-5)
        for a, b in zip(sf.layers, sp.layers):
            torch.testing.assert_close(a.keys, b.keys, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(a.values, b.values, atol=1e-5, rtol=1e-5)
    assert len(calls) == 12 * 3  # one kernel call per layer and call: the fused path ran
    assert sf.offset == sp.offset == 12 * steps


@torch.no_grad()
@pytest.mark.parametrize("cfg", [dict(context=None), dict(layer_scale=None),
                                 dict(input_dimension=32, output_dimensions=(48,))])
def test_fused_other_configurations(monkeypatch, cfg) -> None:
    fused, plain = _pair(**cfg)
    calls = _count_kernel_calls(monkeypatch)
    sf, sp = fused.init_state(1), plain.init_state(1)
    for i in range(9):
        x = torch.randn(1, fused.cfg.input_dimension, 2)
        torch.testing.assert_close(fused(x, sf), plain(x, sp), atol=1e-5, rtol=1e-5)
    assert len(calls) == 9 * 3


@torch.no_grad()
def test_mixed_call_sizes_share_one_cache(monkeypatch) -> None:
    """Whole-file sized calls (PyTorch layers) and streamed ones (kernel) on one state."""
    fused, plain = _pair()
    calls = _count_kernel_calls(monkeypatch)
    sf, sp = fused.init_state(1), plain.init_state(1)
    for steps in (2, 9, 1, 5, 3, 2, 2):
        x = torch.randn(1, 64, steps)
        torch.testing.assert_close(fused(x, sf), plain(x, sp), atol=1e-5, rtol=1e-5)
    assert len(calls) == 5 * 3  # the 9- and 5-step calls took the PyTorch layers


@torch.no_grad()
def test_follows_weight_changes() -> None:
    fused, plain = _pair()
    x = torch.randn(1, 64, 2)

    def compare() -> None:
        sf, sp = fused.init_state(1), plain.init_state(1)
        torch.testing.assert_close(fused(x, sf), plain(x, sp), atol=1e-5, rtol=1e-5)

    compare()
    for t in (fused, plain):
        t.layers[1].linear1.weight.mul_(3)  # in place
    compare()
    state = {k: v + 0.05 * torch.randn_like(v) for k, v in plain.state_dict().items()}
    fused.load_state_dict(state)
    plain.load_state_dict(state)
    compare()
    for t in (fused, plain):  # a new Parameter object altogether
        t.layers[0].self_attn.out_proj.weight = torch.nn.Parameter(torch.full((64, 64), 0.01))
    compare()


def test_not_used_with_autograd_many_rows_fp16_or_unbuffered_cache(monkeypatch) -> None:
    fused, _ = _pair()
    calls = _count_kernel_calls(monkeypatch)
    out = fused(torch.randn(1, 64, 2, requires_grad=True), fused.init_state(1))
    out.sum().backward()  # autograd: the PyTorch layers, gradients flow
    assert fused.layers[0].linear1.weight.grad is not None
    with torch.no_grad():
        fused(torch.randn(1, 64, fused_layer.FUSED_MAX_ROWS + 1), fused.init_state(1))
        fused(torch.randn(3, 64, 2), fused.init_state(3))  # 6 rows
        assert not calls
        fused.layers[2].linear2.gemm_precision = "fp16"  # the decoder's float16 option
        fused(torch.randn(1, 64, 2), fused.init_state(1))
        assert not calls
        fused.layers[2].linear2.gemm_precision = "fp32"
        for m in fused.modules():
            if hasattr(m, "kv_buffer"):
                m.kv_buffer = False
        fused(torch.randn(1, 64, 2), fused.init_state(1))
        assert not calls
        monkeypatch.setattr(fused_layer, "kernels", lambda: None)  # numba missing
        for m in fused.modules():
            if hasattr(m, "kv_buffer"):
                m.kv_buffer = True
        fused(torch.randn(1, 64, 2), fused.init_state(1))
        assert not calls


@torch.no_grad()
def test_copies_look_their_weights_up_again() -> None:
    fused, plain = _pair()
    x = torch.randn(1, 64, 2)
    fused(x, fused.init_state(1))  # fills the layers' array caches
    for clone in (copy.deepcopy(fused), pickle.loads(pickle.dumps(fused))):
        with torch.no_grad():
            clone.layers[0].linear2.weight.zero_()
            plain.layers[0].linear2.weight.zero_()
        torch.testing.assert_close(clone(x, clone.init_state(1)), plain(x, plain.init_state(1)),
                                   atol=1e-5, rtol=1e-5)
        plain.load_state_dict(fused.state_dict())
    assert fused.layers[0].linear2.weight.abs().sum() > 0  # the original kept its weights
