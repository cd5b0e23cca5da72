"""The speedups change how Mimi computes, never what: codes equal the plain path's exactly,
audio within 1e-4, for every switch alone, on the tiny fixture and on a few frames of the
full-size architecture; plus each fast kernel against the op it replaces."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from safetensors.torch import load_file
from torch.nn import functional as F

from mimi_codec import load_mimi
from mimi_codec.models.speedups import Speedups
from mimi_codec.modules.conv import CausalConv1d, CausalConvTranspose1d
from mimi_codec.quantization.codebook import Codebook

VARIANTS = [("all", Speedups.all())] + [(f"without-{n}", Speedups.all().without(n)) for n in Speedups.names()]
VARIANTS += [(f"only-{n}", Speedups(**{k: k == n for k in Speedups.names()}))
             for n in Speedups.names()]


@pytest.fixture(scope="module")
def vectors(fixtures_dir) -> dict[str, torch.Tensor]:
    return load_file(str(fixtures_dir / "mimi_tiny_vectors.safetensors"))


def _load_tiny(fixtures_dir, speedups):
    model = load_mimi(fixtures_dir / "mimi_tiny.safetensors", fixtures_dir / "mimi_tiny.json")
    model.set_speedups(speedups)
    return model


def _stream(model, wav: torch.Tensor, codes_in: torch.Tensor, step: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    F_ = codes_in.shape[-1]
    with model.streaming(1):
        codes = torch.cat([model.encode(wav[..., i * 1920:(i + step) * 1920], num_codebooks=32)
                           for i in range(0, F_, step)], -1)
        audio = torch.cat([model.decode(codes_in[..., i:i + step]) for i in range(0, F_, step)], -1)
    return codes, audio


@pytest.fixture(scope="module")
def plain_tiny(fixtures_dir, vectors):
    model = _load_tiny(fixtures_dir, None)
    wav = vectors["wav"]
    codes = model.encode(wav, num_codebooks=32)
    return {"codes": codes, "audio": model.decode(codes), "stream": _stream(model, wav, codes),
            "stream3": _stream(model, wav, codes, 3)}


@pytest.mark.parametrize("name,speedups", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_tiny_equals_plain_path(fixtures_dir, vectors, plain_tiny, name, speedups) -> None:
    model = _load_tiny(fixtures_dir, speedups)
    wav = vectors["wav"]
    codes = model.encode(wav, num_codebooks=32)
    assert torch.equal(codes, plain_tiny["codes"])
    assert torch.equal(codes[:, :8], vectors["codes_q8"].long())
    assert (model.decode(codes) - plain_tiny["audio"]).abs().max().item() <= 1e-4
    for key, step in (("stream", 1), ("stream3", 3)):
        s_codes, s_audio = _stream(model, wav, plain_tiny["codes"], step)
        assert torch.equal(s_codes, plain_tiny[key][0])
        assert (s_audio - plain_tiny[key][1]).abs().max().item() <= 1e-4


def test_full_size_frames_equal_plain_path() -> None:
    from mimi_moshi_cli.bench import random_mimi, synthetic_speech

    import copy

    fast = random_mimi(0)
    plain = copy.deepcopy(fast)
    plain.set_speedups(None)
    wav = torch.from_numpy(synthetic_speech(0.48, seed=5))[None, None]  # 6 frames
    out = {}
    for name, model in (("fast", fast), ("plain", plain)):
        with torch.inference_mode(), model.streaming(1):
            codes = torch.cat([model.encode(wav[..., i:i + 1920]) for i in range(0, wav.shape[-1], 1920)], -1)
            audio = torch.cat([model.decode(codes[..., f:f + 1]) for f in range(codes.shape[-1])], -1)
        out[name] = codes, audio
    assert torch.equal(out["fast"][0], out["plain"][0])
    assert len(out["plain"][0].unique()) > 20  # the calibrated codebooks give varied codes
    assert (out["fast"][1] - out["plain"][1]).abs().max().item() <= 1e-4


@pytest.mark.parametrize("cin,cout,k,stride,dil,steps", [
    (16, 24, 3, 1, 1, 5), (16, 24, 3, 1, 2, 7), (8, 32, 12, 6, 1, 4), (32, 16, 16, 8, 1, 2),
    (12, 12, 1, 1, 1, 9), (8, 8, 4, 2, 1, 70)])
def test_matmul_conv_equals_conv1d(cin, cout, k, stride, dil, steps) -> None:
    torch.manual_seed(0)
    conv = CausalConv1d(cin, cout, k, stride=stride, dilation=dil)
    x = torch.randn(2, cin, steps * stride)
    conv.matmul_small = False
    ref = conv(x)
    conv.matmul_small = True
    torch.testing.assert_close(conv(x), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cin,cout,stride,steps", [(16, 8, 4, 3), (32, 16, 8, 2), (8, 4, 5, 1), (8, 8, 2, 66)])
def test_matmul_convtr_equals_conv_transpose(cin, cout, stride, steps) -> None:
    torch.manual_seed(0)
    conv = CausalConvTranspose1d(cin, cout, 2 * stride, stride=stride)
    x = torch.randn(2, cin, steps)
    fast_state, ref_state = conv.init_state(2), conv.init_state(2)
    conv.matmul_small = False
    ref = [conv(x, ref_state), conv(x.flip(-1), ref_state)]
    conv.matmul_small = True
    got = [conv(x, fast_state), conv(x.flip(-1), fast_state)]
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast_state.partial, ref_state.partial, atol=1e-5, rtol=1e-5)
    full = F.conv_transpose1d(x, conv.weight, conv.bias, stride)
    torch.testing.assert_close(got[0], full[..., : steps * stride], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bias", [False, True])
@torch.no_grad()
def test_depthwise_convtr_equals_grouped_conv_transpose(monkeypatch, bias) -> None:
    torch.manual_seed(0)
    conv = CausalConvTranspose1d(16, 16, 4, stride=2, groups=16, bias=bias)  # Mimi's upsample
    fast_state, ref_state = conv.init_state(2), conv.init_state(2)
    xs = [torch.randn(2, 16, t) for t in (1, 1, 3)]
    conv.matmul_small = False
    ref = [conv(x, ref_state) for x in xs]
    monkeypatch.setattr(F, "conv_transpose1d", None)  # the fast path must not call it
    conv.matmul_small = True
    got = [conv(x, fast_state) for x in xs]
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(fast_state.partial, ref_state.partial, atol=1e-6, rtol=1e-6)
    assert torch.equal(got[0], ref[0])  # one step: the same products, the same sums


@torch.no_grad()
def test_quantizer_projections_take_the_few_row_gemms(fixtures_dir) -> None:
    model = _load_tiny(fixtures_dir, Speedups.all())
    rvq = model.quantizer.semantic
    x = torch.randn(1, rvq.input_proj.in_channels, 1)
    want = F.conv1d(x, rvq.input_proj.weight)
    torch.testing.assert_close(rvq.input_proj(x), want, atol=1e-6, rtol=1e-6)
    assert rvq.input_proj._packed._packed  # packed: the fast GEMM ran, not F.conv1d
    model.set_speedups(None)
    assert torch.equal(rvq.input_proj(x), want)  # the plain path is nn.Conv1d's arithmetic


@torch.no_grad()  # the cached operand is an inference-only path
def test_cached_distances_give_cdist_codes() -> None:
    g = torch.Generator().manual_seed(0)
    cb = Codebook(16, 512)
    cb.embedding_sum.copy_(torch.randn(512, 16, generator=g))
    cb.cluster_usage.copy_(0.5 + torch.rand(512, generator=g))
    for n in (1, 2, 25, 300):
        x = torch.randn(n, 16, generator=g)
        cb.cache_distances = False
        ref = cb.encode(x)
        cb.cache_distances = True
        assert torch.equal(cb.encode(x), ref)
        assert torch.equal(ref, torch.cdist(x, cb.embedding).argmin(-1))
    cb.embedding_sum.mul_(2)  # an in-place edit must rebuild the cached operand
    x = torch.randn(40, 16, generator=g)
    assert torch.equal(cb.encode(x), torch.cdist(x, cb.embedding).argmin(-1))


def test_switches_and_errors(fixtures_dir) -> None:
    model = _load_tiny(fixtures_dir, Speedups())
    assert model.speedups == Speedups.all().without("input_major")  # the default set
    assert model.encoder_transformer.layers[0].linear1.weight.is_contiguous()
    model.set_speedups(Speedups.all())
    model.load_state_dict(model.state_dict())  # loading keeps the chosen layout
    lin = model.encoder_transformer.layers[0].linear1.weight
    assert lin.stride() == (1, lin.shape[0])  # input-major
    with pytest.raises(ValueError, match="streaming"):
        with model.streaming(1):
            model.set_speedups(None)
    model.set_speedups(None)
    assert model.speedups == Speedups.none()
    assert model.encoder_transformer.layers[0].linear1.weight.is_contiguous()
    with pytest.raises(ValueError, match="expected one of"):
        Speedups().without("turbo")
    with pytest.raises(ValueError, match="Speedups or None"):
        model.set_speedups("all")  # type: ignore[arg-type]


def test_mimi_bench_cli_on_tiny_model(fixtures_dir) -> None:
    import json

    from click.testing import CliRunner

    from mimi_moshi_cli.mimi import main

    args = ["bench", "--weights", str(fixtures_dir / "mimi_tiny.safetensors"),
            "--config", str(fixtures_dir / "mimi_tiny.json"), "--seconds", "0.4", "--json"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["frames"] == 5
    assert 0 < out["encode_p50_ms"] <= out["encode_p99_ms"]
    frame_ms = out["encode_p50_ms"] + out["decode_p50_ms"]
    assert out["rtf"] > 0 and out["total_p50_ms"] <= frame_ms * 1.5 + 1
    res = CliRunner().invoke(main, args[:-1] + ["--no-speedups"])
    assert res.exit_code == 0 and "speedups off" in res.output and "real-time factor" in res.output
    res = CliRunner().invoke(main, ["bench", "--seconds", "0.01"])
    assert res.exit_code == 2 and "0.08" in res.output


@pytest.mark.parametrize("ring", [False, True])
def test_kv_buffer_equals_concat_over_many_steps(ring: bool) -> None:
    """Preallocated key/value buffers (moved back to the front when full, grown when a call
    brings more steps than they hold) give exactly the per-call concatenation's output."""
    from mimi_codec.config import TransformerConfig
    from mimi_codec.modules.transformer import Transformer

    torch.manual_seed(0)
    cfg = TransformerConfig(d_model=32, num_heads=4, num_layers=2, dim_feedforward=64, context=6,
                            input_dimension=32, output_dimensions=(32,))
    model = Transformer(cfg).eval()
    x = torch.randn(1, 32, 200)
    sizes = [1, 2, 1, 3, 2, 17, 1, 1, 2, 5] * 4  # includes a call longer than the buffer
    outs, ptrs = {}, set()
    for buffered in (False, True):
        for layer in model.layers:
            layer.self_attn.kv_buffer = buffered
        state = model.init_state(1, ring=ring)
        pieces, i = [], 0
        with torch.no_grad():
            for n in sizes:
                pieces.append(model(x[..., i:i + n], state))
                i += n
                if buffered:
                    ptrs.add(state.layers[0].key_buf.data_ptr())
                    assert state.layers[0].keys.shape[2] == min(i, 6 if ring else 5)
        outs[buffered] = torch.cat(pieces, -1)
    assert torch.equal(outs[True], outs[False])
    assert len(ptrs) <= 3  # allocated once, then regrown only for the 17-step call


def test_whole_file_coding_leaves_the_numba_kernels_alone(fixtures_dir, vectors, monkeypatch) -> None:
    """A short whole-file call has few rows too, but is not worth compiling the kernels for:
    only streaming runs them."""
    from mimi_codec.modules import gemm

    calls: list[int] = []
    run = gemm.run_numba
    monkeypatch.setattr(gemm, "run_numba", lambda *a: calls.append(1) or run(*a))
    model = _load_tiny(fixtures_dir, Speedups())
    wav = vectors["wav"][..., :1920]  # one frame: the few-row calls of a stream
    codes = model.encode(wav)
    model.decode(codes)
    assert not calls
    with model.streaming(1):
        assert torch.equal(model.encode(wav), codes)
        model.decode(codes)
    assert calls
    assert gemm.numba_allowed()


@pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="numba is not installed")
def test_the_conv_kernels_load_from_numbas_disk_cache_in_a_new_process() -> None:
    """The kernels must be cacheable (a closure was not: every process compiled them again,
    ~30 s before a `mimi roundtrip`). Compile here, then count cache hits in a new process."""
    import subprocess
    import sys

    script = (
        "import torch\n"
        "from mimi_codec.modules import _numba_conv\n"
        "from mimi_codec.modules.conv import CausalConv1d\n"
        "torch.set_num_threads(1)\n"
        "m = CausalConv1d(16, 8, 3)\n"
        "m.numba_conv = m.numba_elu = True\n"
        "with torch.no_grad():\n"
        "    m(torch.randn(1, 16, 24), elu=1.0)\n"
        "stats = _numba_conv.conv_step.stats\n"
        "print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))\n")
    subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    second = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert second.stdout.split() == ["1", "0"], second.stdout  # loaded, not compiled


def test_the_stream_kernels_load_from_numbas_disk_cache_in_a_new_process(fixtures_dir) -> None:
    """The same for the kernels a streamed frame runs now: the SEANet program
    (`fused_seanet`), the transformer layer (`fused_layer`) and the RVQ."""
    import subprocess
    import sys

    script = (
        "import sys, torch\n"
        "from mimi_codec import load_mimi\n"
        "from mimi_codec.modules import fused_layer, fused_seanet\n"
        "from mimi_codec.quantization import rvq\n"
        "torch.set_num_threads(1)\n"
        "m = load_mimi(sys.argv[1], sys.argv[2])\n"
        "with torch.no_grad(), m.streaming(1):\n"
        "    m.decode(m.encode(torch.randn(1, 1, 1920) * 0.1))\n"
        "for k in (fused_seanet.kernels()[0], fused_layer.kernels()[0], rvq.fused_kernels()[0]):\n"
        "    print(sum(k.stats.cache_hits.values()), sum(k.stats.cache_misses.values()))\n")
    args = [sys.executable, "-c", script, str(fixtures_dir / "mimi_tiny.safetensors"),
            str(fixtures_dir / "mimi_tiny.json")]
    subprocess.run(args, capture_output=True, text=True, check=True)
    second = subprocess.run(args, capture_output=True, text=True, check=True)
    hits = [line.split() for line in second.stdout.splitlines()]
    assert len(hits) == 3 and all(int(h) >= 1 and m == "0" for h, m in hits), second.stdout
