"""The `fused_seanet` speedup: a streamed SEANet call as one numba program computes bit for
bit what the layer-by-layer numba path computes (same kernel code), carries the same state
(the two paths can alternate on one stream), sees weight edits, and stays out of the calls
it does not serve."""

from __future__ import annotations

import copy

import pytest
import torch

from mimi_codec.config import SeanetConfig
from mimi_codec.modules import fused_seanet
from mimi_codec.modules.seanet import SeanetDecoder, SeanetEncoder

numba_only = pytest.mark.skipif(fused_seanet.kernels() is None, reason="numba is not installed")
pytestmark = [numba_only, pytest.mark.usefixtures("threads")]

SMALL = {"dimension": 32, "n_filters": 8, "ratios": (4, 3, 2)}  # hop 24


def _pair(cls, **cfg):
    """(layer by layer on numba_conv's path, the same weights as one program)."""
    torch.manual_seed(0)
    ref = cls(SeanetConfig(**cfg))
    with torch.no_grad():  # non-zero biases, so a bias mix-up shows
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    fast = copy.deepcopy(ref)
    for m in (ref, fast):
        for conv in m.modules():
            if hasattr(conv, "numba_conv"):
                conv.numba_conv = conv.numba_elu = True
    fast.fused = True
    return ref, fast


def _counting(monkeypatch) -> list[int]:
    """Count the program kernel's runs (so a test fails if the program quietly did not run)."""
    runs: list[int] = []
    serial, parallel = fused_seanet.kernels()

    def counted(kernel):
        def run(*args):
            runs.append(args[1].shape[0])
            return kernel(*args)
        return run

    monkeypatch.setattr(fused_seanet, "kernels", lambda: (counted(serial), counted(parallel)))
    return runs


def _inputs(cls, batch: int, steps: int, calls: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    shape = (batch, 1, steps * 24) if cls is SeanetEncoder else (batch, 32, steps)
    return [torch.randn(*shape, generator=g) * 0.3 for _ in range(calls)]


@pytest.mark.parametrize("cls", [SeanetEncoder, SeanetDecoder])
@pytest.mark.parametrize("pad_mode", ["constant", "replicate"])
@torch.no_grad()
def test_program_equals_layer_by_layer(monkeypatch, cls, pad_mode) -> None:
    ref, fast = _pair(cls, pad_mode=pad_mode, **SMALL)
    runs = _counting(monkeypatch)
    ref_state, fast_state = ref.init_state(2), fast.init_state(2)
    for x in _inputs(cls, 2, 3, 4):
        want, got = ref(x, ref_state), fast(x, fast_state)
        assert torch.equal(got, want)
        assert torch.equal(fast_state.flat, ref_state.flat)  # every conv's context and overlap
    n_convs = sum(1 for m in fast.modules() if hasattr(m, "numba_conv"))
    assert len(runs) == 4 and runs[0] == n_convs + 2 * len(SMALL["ratios"])  # + each ResBlock's begin, end


@torch.no_grad()
def test_full_size_decoder_and_encoder_frames(monkeypatch) -> None:
    """Mimi's own SEANets on streamed frames (1920 samples; 2 latent steps)."""
    runs = _counting(monkeypatch)
    for cls, x in ((SeanetEncoder, torch.randn(1, 1, 1920) * 0.3), (SeanetDecoder, torch.randn(1, 512, 2))):
        ref, fast = _pair(cls)
        ref_state, fast_state = ref.init_state(1), fast.init_state(1)
        for _ in range(3):
            assert torch.equal(fast(x, fast_state), ref(x, ref_state))
    assert len(runs) == 6


@torch.no_grad()
def test_paths_alternate_on_one_stream(monkeypatch) -> None:
    ref, fast = _pair(SeanetDecoder, **SMALL)
    runs = _counting(monkeypatch)
    ref_state, fast_state = ref.init_state(1), fast.init_state(1)
    for i, x in enumerate(_inputs(SeanetDecoder, 1, 2, 6)):
        fast.fused = i % 2 == 0
        assert torch.equal(fast(x, fast_state), ref(x, ref_state))
    assert len(runs) == 3


@torch.no_grad()
def test_weight_edits_are_seen(monkeypatch) -> None:
    ref, fast = _pair(SeanetEncoder, **SMALL)
    runs = _counting(monkeypatch)
    x = _inputs(SeanetEncoder, 1, 2, 1)[0]
    fast(x, fast.init_state(1))
    for m in (ref, fast):
        m.model[0].weight.mul_(1.5)  # in place: a new version
        m.model[-1].bias = torch.nn.Parameter(m.model[-1].bias + 1)  # a new Parameter
    assert torch.equal(fast(x, fast.init_state(1)), ref(x, ref.init_state(1)))
    assert len(runs) == 2


@torch.no_grad()
def test_stays_out_where_it_does_not_apply(monkeypatch) -> None:
    runs = _counting(monkeypatch)
    _, fast = _pair(SeanetDecoder, **SMALL)
    x = _inputs(SeanetDecoder, 1, 2, 1)[0]
    fast.model[-1].gemm_precision = "fp16"  # the fp16 decoder option: its GEMMs are not the kernel's
    fast(x, fast.init_state(1))
    fast.model[-1].gemm_precision = "fp32"
    with torch.enable_grad():
        fast(x, fast.init_state(1))
    fast(x.double(), fast.double().init_state(1))
    assert runs == []
    dilated, fast = _pair(SeanetEncoder, n_residual_layers=2, **SMALL)  # dilation 2: not the window GEMM's
    want = dilated(torch.ones(1, 1, 48), dilated.init_state(1))
    assert torch.equal(fast(torch.ones(1, 1, 48), fast.init_state(1)), want)
    assert runs == []


def test_copies_start_empty_and_states_keep_their_values() -> None:
    _, fast = _pair(SeanetDecoder, **SMALL)
    state = fast.init_state(1)
    with torch.no_grad():
        fast(_inputs(SeanetDecoder, 1, 2, 1)[0], state)
    assert fast._fused._weights is not None and copy.deepcopy(fast)._fused._weights is None
    partial = state.layers[2].partial  # the first transposed conv's overlap: a view of flat
    assert partial.untyped_storage().data_ptr() == state.flat.untyped_storage().data_ptr()
    assert partial.abs().sum() > 0
    state.reset()
    assert state.flat.abs().sum() == 0
