"""Int8 checkpoints: `moshi quantize` writes the official q8 layout, `load_lm` runs it in pure
torch, and loading any checkpoint stays within 1.2x its size in memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from mimi_moshi_cli.moshi import main as moshi_cli
from moshi_lm import LMConfig, LMGen, LMModel, load_lm
from moshi_lm.loading import official_state_dict
from moshi_lm.models.lm import random_init_
from moshi_lm.quantize import dequantize_weight, is_quantized_name, quantize_weight
from moshi_lm.safetensors_io import write_streaming


@pytest.fixture(scope="module")
def q8_path(tmp_path_factory, fixtures_dir):
    out = tmp_path_factory.mktemp("q8") / "tiny.q8.safetensors"
    result = CliRunner().invoke(moshi_cli, ["quantize", str(fixtures_dir / "moshi_tiny.safetensors"), str(out)])
    assert result.exit_code == 0, result.output
    assert "61 weights int8, 34 tensors copied" in result.output
    return out


def test_quantize_weight_rowwise_absmax():
    w = torch.randn(5, 40, generator=torch.Generator().manual_seed(0))
    w[2] = 0.0
    q, scb = quantize_weight(w)
    assert q.dtype == torch.int8 and scb.dtype == torch.float32 and scb.shape == (5,)
    assert torch.equal(scb, w.abs().amax(1))
    assert torch.equal(q.abs().amax(1)[[0, 1, 3, 4]], torch.full((4,), 127, dtype=torch.int8))
    assert torch.equal(q, torch.round(w * 127 / scb.clamp(min=1e-30)[:, None]).to(torch.int8))
    err = (dequantize_weight(q, scb) - w).abs()
    assert (err <= scb[:, None] / 254 + 1e-7).all()


def test_layout_matches_official_q8(q8_path, fixtures_dir):
    src = load_file(fixtures_dir / "moshi_tiny.safetensors")
    q8 = load_file(q8_path)
    quantized = {k for k in src if is_quantized_name(k)}
    # every linear layer of the model, nothing else (embeddings and norms stay float)
    lm = LMModel(LMConfig.from_json(fixtures_dir / "moshi_tiny.json"), device="meta")
    linears = {k for k, v in official_state_dict(lm).items() if v.dim() == 2 and "emb" not in k}
    assert quantized == linears and len(quantized) == 61
    assert set(q8) == set(src) | {k + "_scb" for k in quantized}
    for k in quantized:
        assert q8[k].dtype == torch.int8 and q8[k + "_scb"].dtype == torch.float32
        assert q8[k + "_scb"].shape == (src[k].shape[0],)
        assert torch.equal(q8[k], quantize_weight(src[k])[0])
    for k in set(src) - quantized:
        assert torch.equal(q8[k], src[k])


def test_q8_model_close_to_float(q8_path, fixtures_dir, vectors):
    cfg = fixtures_dir / "moshi_tiny.json"
    lm = load_lm(fixtures_dir / "moshi_tiny.safetensors", cfg)
    q8 = load_lm(q8_path, cfg)
    assert q8.text_linear.weight.dtype == torch.int8 and q8.text_linear.weight_scb.dtype == torch.float32
    assert q8.transformer.layers[0].self_attn.in_proj.quantized
    # the int8 matmul equals the float model with dequantized weights
    deq = load_lm(fixtures_dir / "moshi_tiny.safetensors", cfg)
    qstate = load_file(q8_path)
    deq_state = official_state_dict(deq)
    with torch.no_grad():
        for k in qstate:
            if k.endswith("_scb"):
                base = k[:-4]
                deq_state[base].copy_(dequantize_weight(qstate[base], qstate[k]))
    greedy = vectors["greedy_tokens"].long()[:, :, 1:]
    codes = torch.cat([greedy, vectors["user_codes"].long()[:, :, 1:]], dim=1)
    ref, out, out_deq = lm(codes), q8(codes), deq(codes)
    m, tm = ref.mask, ref.text_mask
    assert (out.logits[m] - out_deq.logits[m]).abs().max() < 1e-5
    # the float model's argmax on its own greedy conversation is the greedy tokens ...
    assert torch.equal(ref.logits.argmax(-1)[m], greedy[:, 1:][m])
    # ... and the int8 model picks the same tokens in the same context most of the time
    audio_agree = (out.logits.argmax(-1)[m] == greedy[:, 1:][m]).float().mean().item()
    text_agree = (out.text_logits.argmax(-1)[tm] == greedy[:, :1][tm]).float().mean().item()
    err = (out.logits[m] - ref.logits[m]).abs().max().item()
    print(f"int8 vs float: greedy top-1 agreement audio {audio_agree:.1%}, text {text_agree:.1%}, "
          f"max logit error {err:.3f}")
    assert audio_agree > 0.95 and text_agree > 0.95  # measured 97.9% and 98.0%


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_q8_generates(q8_path, fixtures_dir, vectors, dtype):
    q8 = load_lm(q8_path, fixtures_dir / "moshi_tiny.json", dtype=dtype)
    assert q8.text_emb.weight.dtype == dtype
    gen = LMGen(q8, seed=1)
    user = vectors["user_codes"].long()
    with gen.streaming(2):
        outs = [gen.step(user[:, :, t:t + 1].expand(2, -1, -1)) for t in range(6)]
    assert outs[0] is None and all(o.shape == (2, 9, 1) for o in outs[1:])


_MEASURE = textwrap.dedent("""
    import os, resource, sys, threading, torch
    import moshi_lm

    def anon():
        # anonymous resident memory: where tensors live (file-backed library pages excluded,
        # the kernel may drop and re-read those under memory pressure from other processes)
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith("RssAnon:"))

    # warm-up: torch's lazily loaded code and first allocations are not the checkpoint's cost
    moshi_lm.LMModel(moshi_lm.LMConfig(), device="meta").to_empty(device="meta")
    before, peak, done = anon(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], anon())
            done.wait(0.0005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    lm = moshi_lm.load_lm(sys.argv[1], sys.argv[2])
    done.set()
    sampler.join()
    peak[0] = max(peak[0], anon())
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(peak[0] - before, sum(p.numel() * p.element_size() for p in lm.parameters()), maxrss)
""")


@pytest.fixture(scope="module")
def midsize(tmp_path_factory):
    """A ~130 MB bf16 checkpoint of a mid-size random LM, and its config."""
    folder = tmp_path_factory.mktemp("mid")
    cfg = LMConfig(dim=512, num_heads=8, num_layers=6, text_card=8000, depformer_dim=256,
                   depformer_num_heads=8, depformer_num_layers=2, depformer_dim_feedforward=1056, context=500)
    (folder / "config.json").write_text(json.dumps(cfg.to_dict()))
    model = random_init_(LMModel(cfg, dtype=torch.bfloat16), seed=0)
    state = official_state_dict(model)
    path = folder / "model.safetensors"
    write_streaming(path, [(k, v.dtype, tuple(v.shape)) for k, v in state.items()], lambda k: state[k])
    return path, folder / "config.json"


@pytest.mark.slow
@pytest.mark.parametrize("quantized", [False, True])
def test_loading_peak_memory(midsize, tmp_path, quantized):
    path, cfg = midsize
    if quantized:
        q8 = tmp_path / "model.q8.safetensors"
        assert CliRunner().invoke(moshi_cli, ["quantize", str(path), str(q8)]).exit_code == 0
        path = q8
    size = path.stat().st_size
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(path), str(cfg)], capture_output=True,
                         text=True, check=True)
    growth, model_bytes, maxrss = map(int, out.stdout.split())
    print(f"checkpoint {size / 2**20:.1f} MiB, model {model_bytes / 2**20:.1f} MiB, peak anonymous "
          f"memory growth while loading {growth / 2**20:.1f} MiB = {growth / size:.2f}x "
          f"(process ru_maxrss {maxrss / 2**20:.0f} MiB)")
    assert model_bytes > 0.95 * size
    assert growth < 1.2 * size
