"""The `huge_pages` speedup: a model's large weights move into memory the kernel backs with
2 MiB pages, with their values, shapes and strides unchanged, and back out when it is
switched off; loading, copying and pickling keep working."""

from __future__ import annotations

import copy
import mmap
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from mimi_codec import MimiModel
from mimi_codec.models.speedups import Speedups
from mimi_codec.modules import huge_pages

pytestmark = pytest.mark.skipif(not huge_pages.available(),
                                reason="no transparent huge pages (Linux, 'madvise' or 'always')")


class _Net(nn.Module):
    """Two large layers (2 MiB and 4 MiB weights), one small, one tied pair."""

    def __init__(self) -> None:
        super().__init__()
        self.big = nn.Linear(1024, 512)
        self.bigger = nn.Linear(512, 2048, bias=False)
        self.small = nn.Linear(8, 8)
        self.tied = nn.Linear(1024, 512, bias=False)
        self.tied.weight = self.big.weight


def _smaps(where: "huge_pages.Arena | int", field: str) -> int:
    """A field of the mapping holding the arena (or an address), from /proc/self/smaps (kB for
    sizes; 1 or 0 for THPeligible: advised for huge pages, or not)."""
    where = where if isinstance(where, int) else where.start
    inside = False
    for line in open("/proc/self/smaps"):
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(v, 16) for v in head.split("-"))
            inside = lo <= where < hi
        elif inside and head == field + ":":
            return int(line.split()[1])
    raise LookupError(f"no {field} for {where:#x} in /proc/self/smaps")


def _thp_fallbacks() -> int:
    """How many huge-page faults found no free 2 MiB page and took 4 KiB ones (/proc/vmstat)."""
    for line in open("/proc/vmstat"):
        if line.startswith("thp_fault_fallback "):
            return int(line.split()[1])
    return 0


def _assert_huge(where: "huge_pages.Arena | int", fallbacks_before: int) -> None:
    """The mapping is advised for huge pages (ours to do) and the kernel backed it with them, unless
    it counted a fault that found no free 2 MiB page since `fallbacks_before` (fragmented memory:
    the kernel's call, which once failed this check with no fault of ours)."""
    assert _smaps(where, "THPeligible") == 1
    backed = _smaps(where, "AnonHugePages")
    assert backed >= 2048 or _thp_fallbacks() > fallbacks_before, backed


def _in_a_region_of_ours(a: np.ndarray) -> bool:
    """True when the array views memory of a huge-page region of ours (an `Arena`'s mmap)."""
    base: object = a
    while isinstance(base, (np.ndarray, memoryview)):  # views, then np.frombuffer's memoryview
        base = base.base if isinstance(base, np.ndarray) else base.obj
    return isinstance(base, mmap.mmap)


def _assert_ordinary(a: np.ndarray) -> None:
    """Ordinary memory: not a region of ours. (Not a smaps check: numpy advises its own large
    buffers for huge pages, and malloc hands such advised heap memory out again, so ordinary
    memory may be advised, even backed, by others; the full suite once showed that.)"""
    assert not _in_a_region_of_ours(a)


def test_large_weights_move_with_values_shapes_and_strides() -> None:
    torch.manual_seed(0)
    net = _Net()
    net.bigger.weight.data = net.bigger.weight.data.t().contiguous().t()  # input-major strides
    before = {k: (v.clone(), v.stride()) for k, v in net.state_dict().items()}
    fallbacks = _thp_fallbacks()
    moved = huge_pages.move_weights(net, True)
    arena = net._huge_arena
    assert moved == (512 * 1024 + 2048 * 512) * 4  # the tied weight once, nothing small
    assert arena.contains(net.big.weight) and arena.contains(net.bigger.weight)
    assert not arena.contains(net.small.weight) and not arena.contains(net.big.bias)
    assert net.tied.weight is net.big.weight
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k][0]) and v.stride() == before[k][1], k
    _assert_huge(arena, fallbacks)  # the kernel did back it with huge pages
    assert huge_pages.move_weights(net, True) == moved and net._huge_arena is arena  # no second move
    huge_pages.move_weights(net, False)
    assert net._huge_arena is None and not arena.contains(net.big.weight)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k][0]) and v.stride() == before[k][1], k


@torch.no_grad()
def test_mimi_streams_the_same_bits_from_huge_pages() -> None:
    from mimi_moshi_cli.bench import random_mimi, synthetic_speech

    fast = random_mimi(0)  # full size, codebooks fitted to its latents
    assert fast.speedups.huge_pages and fast._huge_arena is not None
    arena = fast._huge_arena
    assert arena.contains(fast.encoder_transformer.layers[0].linear1.weight)
    plain = copy.deepcopy(fast)  # the copy holds ordinary tensors
    assert plain._huge_arena is None and not arena.contains(plain.encoder_transformer.layers[0].linear1.weight)
    plain.set_speedups(Speedups().without("huge_pages"))
    wav = torch.from_numpy(synthetic_speech(0.24, seed=5))[None, None]  # 3 frames
    out = []
    for model in (fast, plain):
        with model.streaming(1):
            codes = torch.cat([model.encode(wav[..., i:i + 1920]) for i in range(0, wav.shape[-1], 1920)], -1)
            out.append((codes, model.decode(codes)))
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])  # bit for bit
    assert len(out[0][0].unique()) > 8  # varied codes, not one code everywhere


def test_loading_and_copying() -> None:
    torch.manual_seed(0)
    model = MimiModel().eval()
    arena = model._huge_arena
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["decoder_transformer.layers.0.linear1.weight"].mul_(2)
    model.load_state_dict(state)  # in place: stays in the arena
    w = model.decoder_transformer.layers[0].linear1.weight
    assert model._huge_arena is arena and arena.contains(w)
    assert torch.equal(w, state["decoder_transformer.layers.0.linear1.weight"])
    model.load_state_dict(state, assign=True)  # new tensors: moved into a fresh arena
    assert model._huge_arena is not arena and model._huge_arena.contains(model.decoder_transformer.layers[0].linear1.weight)
    again = copy.deepcopy(model)
    assert again._huge_arena is None
    for k, v in again.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_a_pickled_module_holds_ordinary_tensors() -> None:
    net = _Net()
    huge_pages.move_weights(net, True)
    again = pickle.loads(pickle.dumps(net))
    assert again._huge_arena is None
    for (k, v), w in zip(net.state_dict().items(), again.state_dict().values()):
        assert torch.equal(v, w), k


def test_nothing_moves_where_huge_pages_are_unavailable(monkeypatch) -> None:
    monkeypatch.setattr(huge_pages, "available", lambda: False)
    net = _Net()
    ptr = net.big.weight.data_ptr()
    assert huge_pages.move_weights(net, True) == 0
    assert net.big.weight.data_ptr() == ptr and net._huge_arena is None


@torch.no_grad()
def test_the_window_gemms_reordered_weight_copies_live_in_huge_pages() -> None:
    from mimi_codec.modules.conv import CausalConv1d, _step_kernels

    if _step_kernels() is None:
        pytest.skip("numba is not installed")
    torch.manual_seed(0)
    wide = CausalConv1d(256, 512, 16, stride=8)  # 8 MiB of weights, stored [out, in, tap]
    pointwise = CausalConv1d(1024, 512, 1)  # 2 MiB, already in the window GEMM's order
    for conv, huge in ((wide, True), (wide, False), (pointwise, True)):
        conv.numba_conv, conv.huge_pages = True, huge
        conv._packed = type(conv._packed)()
        x = torch.randn(1, conv.in_channels, 2 * conv.stride[0])
        fallbacks = _thp_fallbacks()
        conv(x)
        (w, _, _), = (entry for _, entry in conv._packed._packed.values())
        torch.testing.assert_close(torch.from_numpy(w), conv.weight.permute(0, 2, 1).reshape(w.shape))
        if conv is pointwise:  # a view of the weight itself: no copy at all
            assert w.ctypes.data == conv.weight.data_ptr()
        elif huge:
            assert _in_a_region_of_ours(w)
            _assert_huge(w.ctypes.data, fallbacks)
        else:
            _assert_ordinary(w)


def test_the_seanet_programs_flat_weights_live_in_huge_pages() -> None:
    """`fused_seanet` writes every conv's window-GEMM matrix into one flat array, built in a
    huge-page region (`huge_empty`) with the switch on, in ordinary memory without."""
    from mimi_codec.config import SeanetConfig
    from mimi_codec.modules import fused_seanet
    from mimi_codec.modules.seanet import SeanetDecoder

    if fused_seanet.kernels() is None:
        pytest.skip("numba is not installed")
    torch.manual_seed(0)
    dec = SeanetDecoder(SeanetConfig(dimension=512, n_filters=32, ratios=(8, 4)))  # 4 MiB of weights
    dec.fused = True
    for huge in (True, False):
        for m in dec.modules():
            if hasattr(m, "huge_pages"):
                m.huge_pages = huge
        fallbacks = _thp_fallbacks()
        with torch.no_grad():
            dec(torch.randn(1, 512, 2), dec.init_state(1))
        flat = dec._fused._weights.weights
        first = dec.model[0]  # its matrix opens the flat array: [C_out, K * C_in], taps major
        torch.testing.assert_close(torch.from_numpy(flat[: first.weight.numel()]).view(first.out_channels, -1),
                                   first.weight.permute(0, 2, 1).reshape(first.out_channels, -1), atol=0, rtol=0)
        if huge:
            assert _in_a_region_of_ours(flat)
            _assert_huge(flat.ctypes.data, fallbacks)
        else:
            _assert_ordinary(flat)


def test_load_mimi_reads_the_large_weights_straight_into_huge_pages(tmp_path) -> None:
    """The full-size checkpoint's large weights are read into the model's arena, not
    memory-mapped and copied: no mapping of the file is left (its resident pages once kept
    the loading peak at ~960 MB RSS), and the values are the file's."""
    from mimi_codec import load_mimi, save_mimi

    torch.manual_seed(0)
    model = MimiModel()
    path = tmp_path / "full.safetensors"
    save_mimi(model, path)
    loaded = load_mimi(path)
    large = huge_pages._large(loaded)
    assert len(large) > 100 and all(loaded._huge_arena.contains(t) for t in large)
    assert str(path) not in open("/proc/self/maps").read()
    want, got = model.state_dict(), loaded.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
