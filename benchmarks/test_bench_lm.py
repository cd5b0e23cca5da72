"""Moshi LM generator speed: steps per second of `LMGen.step` (one 80 ms frame each).

- tiny fixture config and a mid-size random config on CPU (fp32);
- the full 7B config with random bf16 weights on CUDA when a GPU is present;
- side by side with kyutai's reference `LMGen` on the tiny config, when
  MIMI_BENCH_REFERENCE_PYTHON names a Python with kyutai's `moshi`: both are timed in the same run, the ratio is stored in extra_info.

Run: pytest benchmarks/test_bench_lm.py --benchmark-only
"""

from __future__ import annotations

import os
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
import torch

from moshi_lm import LMConfig, LMGen, LMModel, load_lm
from moshi_lm.models.lm import random_init_

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
REF_PYTHON = Path(os.environ.get("MIMI_BENCH_REFERENCE_PYTHON") or "/nonexistent/python")
MID = LMConfig(dim=512, num_heads=8, num_layers=6, text_card=8000, depformer_dim=256, depformer_num_heads=8,
               depformer_num_layers=2, depformer_dim_feedforward=1056)


def _tiny() -> LMModel:
    return load_lm(FIXTURES / "moshi_tiny.safetensors", FIXTURES / "moshi_tiny.json")


def _bench_steps(benchmark, lm: LMModel, batch_size: int = 1, sync: bool = False) -> None:
    gen = LMGen(lm, seed=0)
    codes = torch.randint(0, lm.config.card, (batch_size, lm.config.num_user_codebooks, 1), device=lm.device)
    with gen.streaming(batch_size):
        for _ in range(10):
            gen.step(codes)

        def step() -> None:
            gen.step(codes)
            if sync:
                torch.cuda.synchronize()

        benchmark.pedantic(step, rounds=200, warmup_rounds=5, iterations=1)
    benchmark.extra_info["steps_per_s"] = 1.0 / benchmark.stats.stats.mean
    benchmark.extra_info["realtime_factor"] = 12.5 / (1.0 / benchmark.stats.stats.mean)


def test_bench_lmgen_tiny_cpu(benchmark):
    _bench_steps(benchmark, _tiny())


def test_bench_lmgen_mid_cpu(benchmark):
    _bench_steps(benchmark, random_init_(LMModel(MID), seed=0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bench_lmgen_7b_cuda(benchmark):
    lm = random_init_(LMModel(LMConfig(), device="cuda", dtype=torch.bfloat16), seed=0)
    _bench_steps(benchmark, lm, sync=True)


_REFERENCE = textwrap.dedent("""
    import json, sys, time, torch
    from moshi.models.loaders import get_moshi_lm
    from moshi.models.lm import LMGen
    weights, config, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    lm = get_moshi_lm(weights, lm_kwargs=json.load(open(config)), device="cpu", dtype=torch.float32)
    gen = LMGen(lm, use_sampling=True, temp=0.8, temp_text=0.7, top_k=250, top_k_text=25)
    codes = torch.randint(0, 2048, (1, 8, 1))
    with gen.streaming(1):
        for _ in range(10):
            gen.step(codes)
        t0 = time.perf_counter()
        for _ in range(steps):
            gen.step(codes)
    print(json.dumps((time.perf_counter() - t0) / steps))
""")


def _reference_step_s(steps: int) -> float:
    out = subprocess.run([str(REF_PYTHON), "-c", _REFERENCE, str(FIXTURES / "moshi_tiny.safetensors"),
                          str(FIXTURES / "moshi_tiny.json"), str(steps)],
                         capture_output=True, text=True, check=True, timeout=600)
    return float(out.stdout.strip().splitlines()[-1])


def _ours_step_s(gen: LMGen, codes: torch.Tensor, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        gen.step(codes)
    return (time.perf_counter() - t0) / steps


@pytest.mark.skipif(not REF_PYTHON.exists(), reason="MIMI_BENCH_REFERENCE_PYTHON is unset or missing (kyutai's moshi environment)")
def test_bench_lmgen_tiny_vs_reference(benchmark):
    """Ours vs the reference, same config and sampling settings, interleaved runs, best of 3."""
    gen = LMGen(_tiny(), seed=0)
    codes = torch.randint(0, 2048, (1, 8, 1))
    ours, ref = [], []
    with gen.streaming(1):
        for _ in range(10):
            gen.step(codes)
        for _ in range(3):
            ref.append(_reference_step_s(100))
            ours.append(_ours_step_s(gen, codes, 100))
        benchmark.pedantic(lambda: gen.step(codes), rounds=100, warmup_rounds=0, iterations=1)
    ratio = min(ref) / min(ours)
    benchmark.extra_info.update({"reference_ms_per_step": 1e3 * min(ref), "ours_ms_per_step": 1e3 * min(ours),
                                 "speedup": ratio})
    print(f"\nreference {1e3 * min(ref):.2f} ms/step, ours {1e3 * min(ours):.2f} ms/step, speedup {ratio:.1f}x")
    assert ratio >= 3.0
