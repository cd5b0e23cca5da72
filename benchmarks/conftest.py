"""Shared setup of the codec speed suites (`pytest benchmarks/ --benchmark-only`).

The model is the full-size official architecture with random weights from a fixed seed
(`mimi_moshi_cli.bench.random_mimi`): the same compute as the real checkpoint. It is saved
once in the official layout, and that one file is what every implementation loads, so the
comparison also checks full-size parity (codes must be equal).

Options (or environment variables):
  --bench-peers auto|none|reference,rustymimi   peers to compare with (MIMI_BENCH_PEERS); peers
        need MIMI_BENCH_REFERENCE_PYTHON pointing at a Python with `moshi` / `rustymimi`.
  --bench-threads N    torch threads here and in the peers (MIMI_BENCH_THREADS; default torch's).
  --bench-stream-seconds S   seconds of bria.mp3 to stream (MIMI_BENCH_STREAM_SECONDS; default 12,
        45 for the whole file).
The comparison table (every implementation, same run, ratios) is printed at the end and
stored in each benchmark's `extra_info`, which `make_report.py` turns into docs/performance.md.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from peers import PEER_NAMES, Ours, Peer, peer_available  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BRIA = ROOT / "tests" / "data" / "bria.mp3"
SEED = 0

#: workload name -> {impl name -> summary dict}; printed at the end of the session.
RESULTS: dict[str, dict[str, dict[str, float]]] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("mimi-bench")
    g.addoption("--bench-peers", default=os.environ.get("MIMI_BENCH_PEERS", "auto"),
                help="auto, none, or a comma list of reference,rustymimi")
    g.addoption("--bench-threads", type=int, default=int(os.environ.get("MIMI_BENCH_THREADS", "0")) or None,
                help="torch threads here and in the peer processes (default: torch's default)")
    g.addoption("--bench-stream-seconds", type=float,
                default=float(os.environ.get("MIMI_BENCH_STREAM_SECONDS", "12")),
                help="seconds of bria.mp3 to stream frame by frame (45 = all of it)")


@dataclass(frozen=True)
class BenchSetup:
    """Everything the suites share."""

    threads: int | None  # torch threads (None: torch's default)
    stream_seconds: float  # seconds of bria.mp3 streamed
    weights: Path  # the random full-size checkpoint, official layout
    wav: np.ndarray  # [T] float32 24 kHz: bria.mp3 looped to 60 s
    wav_npy: Path  # the same, as .npy for the peers
    tmp: Path  # scratch folder


@pytest.fixture(scope="session")
def bench_setup(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> BenchSetup:
    import torch

    from mimi_codec import save_mimi
    from mimi_codec.audio import load_audio
    from mimi_moshi_cli.bench import random_mimi

    threads = request.config.getoption("--bench-threads")
    if threads:
        torch.set_num_threads(threads)
    tmp = tmp_path_factory.mktemp("mimi_bench")
    weights = tmp / "mimi_random_full.safetensors"
    save_mimi(random_mimi(SEED), weights)
    bria = load_audio(BRIA).wav
    reps = int(np.ceil(60 * 24000 / len(bria)))
    wav = np.tile(bria, reps)[: 60 * 24000].astype(np.float32)
    wav_npy = tmp / "bria_60s.npy"
    np.save(wav_npy, wav)
    seconds = min(request.config.getoption("--bench-stream-seconds"), len(bria) / 24000)
    return BenchSetup(threads, seconds, weights, wav, wav_npy, tmp)


def _wanted_peers(config: pytest.Config) -> list[str]:
    opt = config.getoption("--bench-peers").strip()
    if opt == "none":
        return []
    names = list(PEER_NAMES) if opt == "auto" else [n.strip() for n in opt.split(",") if n.strip()]
    unknown = [n for n in names if n not in PEER_NAMES]
    if unknown:
        raise pytest.UsageError(f"--bench-peers: unknown {unknown}; expected {list(PEER_NAMES)}")
    return [n for n in names if peer_available(n)]


@pytest.fixture(scope="session")
def ours(bench_setup: BenchSetup) -> Ours:
    """Our model with its default speedups, loaded from the shared checkpoint."""
    from mimi_codec import load_mimi

    return Ours("ours", load_mimi(bench_setup.weights), bench_setup.wav)


@pytest.fixture(scope="session")
def ours_plain(bench_setup: BenchSetup) -> Ours:
    """Our model with every speedup off (the unoptimised path), same checkpoint."""
    from mimi_codec import load_mimi

    model = load_mimi(bench_setup.weights)
    model.set_speedups(None)
    return Ours("ours-unoptimised", model, bench_setup.wav)


@pytest.fixture(scope="session")
def ours_fp16_decoder(bench_setup: BenchSetup) -> list[Ours]:
    """Our default model with the decoder's float16 weights (`set_decoder_precision("fp16")`),
    where this PyTorch build has the kernels (else no such implementation)."""
    from mimi_codec import load_mimi
    from mimi_codec.modules.gemm import fp16_available

    if not fp16_available():
        return []
    model = load_mimi(bench_setup.weights)
    model.set_decoder_precision("fp16")
    return [Ours("ours-decoder-fp16", model, bench_setup.wav)]


@pytest.fixture(scope="session")
def peers(request: pytest.FixtureRequest, bench_setup: BenchSetup) -> list[Peer]:
    """The peer implementations available (an empty list is fine: no comparison)."""
    started = [Peer(name, bench_setup.weights, bench_setup.wav_npy, bench_setup.threads, bench_setup.tmp)
               for name in _wanted_peers(request.config)]
    yield started
    for p in started:
        p.close()


def record(benchmark: Any, workload: str, summaries: dict[str, dict[str, float]], key: str) -> None:
    """Store one workload's per-implementation summaries for the final table and the JSON.

    Args:
        key: the summary entry the ratios are taken of (e.g. "total_p50_ms").
    """
    base = summaries["ours"][key]
    for name, s in summaries.items():
        s["ratio_vs_ours"] = s[key] / base if base else float("nan")
    RESULTS[workload] = summaries
    benchmark.extra_info["workload"] = workload
    benchmark.extra_info["ratio_key"] = key
    benchmark.extra_info["impls"] = summaries


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    tr = terminalreporter
    tr.section("Mimi comparison (same run, interleaved; ratio = impl / ours)")
    for workload, summaries in RESULTS.items():
        tr.write_line(workload)
        for name, s in summaries.items():
            cols = "  ".join(f"{k}={v:.3g}" for k, v in s.items() if isinstance(v, (int, float)))
            tr.write_line(f"  {name:18s} {cols}")
