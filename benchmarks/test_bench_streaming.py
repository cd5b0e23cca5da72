"""Streaming latency: bria.mp3 frame by frame through encode then decode, batch 1, like
kyutai's `mimi_streaming_test.py`, with every implementation in lockstep.

For each 80 ms frame, the other implementations (our unoptimised path, kyutai's `moshi`,
`rustymimi`) process that frame first, then ours does under pytest-benchmark's timer, so
machine noise hits all of them alike. Each implementation times its own encode and decode
calls. Reported per implementation: median / p90 / p99 per-frame latency of encode,
decode and both, and the real-time factor (compute seconds / audio seconds).

`ours-decoder-fp16` is our default model with the decoder's float16-weight option: its codes
must equal ours, its audio is compared, not bounded.

Codes, frame by frame: our unoptimised path and kyutai's `moshi` must give exactly ours
(full-size parity). For the reference this holds over its first 10 s: past 250 transformer
steps its streaming ring cache lets its output drift from its own whole-input output
(see docs/codec.md), so later frames are counted, not asserted. rustymimi, an independent
implementation with its own arithmetic, is counted too.

`test_bench_stream_speedups` runs our model with each speedup switched off in turn, so
each one's effect is measured on its own. `test_bench_stream_floor` puts our frame beside the
time to read, once, the weights a frame reads (`WeightReadFloor`): what no streamed frame can
beat on this machine.
"""

from __future__ import annotations

import time

from typing import Any

import numpy as np
import pytest
from conftest import BenchSetup, record
from peers import FRAME, FrameResult, Ours, WeightReadFloor

WARMUP = 3


def _summary(results: list[FrameResult]) -> dict[str, float]:
    enc = np.array([r.encode_s for r in results])
    dec = np.array([r.decode_s for r in results])
    tot = enc + dec
    out: dict[str, float] = {"frames": len(results)}
    for name, arr in (("encode", enc), ("decode", dec), ("total", tot)):
        for q in (50, 90, 99):
            out[f"{name}_p{q}_ms"] = float(np.percentile(arr, q) * 1e3)
    out["rtf"] = float(tot.sum() / (len(tot) * FRAME / 24000))
    out["p99_over_p50"] = out["total_p99_ms"] / out["total_p50_ms"]
    return out


#: Idle time before each implementation's frame, as in live use, where a frame arrives every
#: 80 ms and the codec idles between frames. Without it, the worker threads the previous
#: implementation leaves spinning (OpenMP's, rayon's) take cycles from the next one.
SETTLE_S = 0.01


def _lockstep(benchmark: Any, main: Ours, others: list[Any], frames: int) -> dict[str, list[FrameResult]]:
    """Stream `frames` frames through every implementation; `main` under pytest-benchmark."""
    impls = [main, *others]
    for impl in impls:  # warm up on a state that is then dropped
        impl.stream_start()
        for i in range(WARMUP):
            impl.stream_frame(i)
        impl.stream_start()
    results: dict[str, list[FrameResult]] = {impl.name: [] for impl in impls}
    index = iter(range(frames))

    def setup() -> tuple[tuple[int], dict[str, Any]]:
        i = next(index)
        for impl in others:
            time.sleep(SETTLE_S)
            results[impl.name].append(impl.stream_frame(i))
        time.sleep(SETTLE_S)
        return (i,), {}

    def target(i: int) -> None:
        results[main.name].append(main.stream_frame(i))

    benchmark.pedantic(target, setup=setup, rounds=frames, iterations=1)
    for impl in impls:  # leave streaming: later whole-file calls must start fresh
        impl.stream_stop()
    return results


REFERENCE_EXACT_FRAMES = 125  # 10 s: the reference's streaming equals its whole-input path this far


def _code_mismatches(a: list[FrameResult], b: list[FrameResult]) -> int:
    return sum(int(not np.array_equal(x.codes, y.codes)) for x, y in zip(a, b))


def test_bench_stream_bria(benchmark: Any, bench_setup: BenchSetup, ours: Ours, ours_plain: Ours,
                           ours_fp16_decoder: list[Ours], peers: list[Any]) -> None:
    frames = int(bench_setup.stream_seconds * 24000) // FRAME
    benchmark.group = "stream"
    results = _lockstep(benchmark, ours, [ours_plain, *ours_fp16_decoder, *peers], frames)
    summaries = {name: _summary(r) for name, r in results.items()}
    n = REFERENCE_EXACT_FRAMES
    for name, r in results.items():
        if name == "ours":
            continue
        summaries[name]["code_mismatch_frames"] = _code_mismatches(results["ours"], r)
        summaries[name]["code_mismatch_frames_first_10s"] = _code_mismatches(results["ours"][:n], r[:n])
        summaries[name]["audio_head_max_abs_diff"] = float(max(
            np.abs(x.audio_head - y.audio_head).max() for x, y in zip(results["ours"], r)))
    record(benchmark, f"stream {frames} frames of bria.mp3 (encode+decode per 80 ms frame)",
           summaries, "total_p50_ms")
    assert summaries["ours-unoptimised"]["code_mismatch_frames"] == 0
    assert summaries["ours-unoptimised"]["audio_head_max_abs_diff"] < 1e-4
    if "ours-decoder-fp16" in summaries:  # an option that changes the audio, never the codes
        assert summaries["ours-decoder-fp16"]["code_mismatch_frames"] == 0
    if "reference" in summaries:
        assert summaries["reference"]["code_mismatch_frames_first_10s"] == 0


FLOOR_FRAMES = 40


def test_bench_stream_floor(benchmark: Any, bench_setup: BenchSetup, ours: Ours) -> None:
    floor = WeightReadFloor(ours.model)
    benchmark.group = "stream-floor"
    results = _lockstep(benchmark, ours, [floor], FLOOR_FRAMES)
    summaries = {name: _summary(r) for name, r in results.items()}
    summaries[floor.name]["weights_mb"] = floor.bytes / 1e6
    record(benchmark, f"stream beside the weight-read floor ({FLOOR_FRAMES} frames)", summaries,
           "total_p50_ms")
    # reading the weights alone must be faster than a frame that reads them and computes
    assert summaries[floor.name]["total_p50_ms"] < summaries["ours"]["total_p50_ms"]


SPEEDUP_FRAMES = 40


@pytest.fixture(scope="module")
def speedup_variants(bench_setup: BenchSetup) -> list[Ours]:
    """Our model once per speedup switched alone (off if on by default, on if off), plus
    every speedup off."""
    from mimi_codec import load_mimi
    from mimi_codec.models.speedups import Speedups

    variants = []
    default = Speedups()
    for name in Speedups.names():
        on = getattr(default, name)
        model = load_mimi(bench_setup.weights)
        model.set_speedups(default.toggled(name, not on))
        variants.append(Ours(f"ours-{'without' if on else 'with'}-{name}", model, bench_setup.wav))
    model = load_mimi(bench_setup.weights)
    model.set_speedups(None)
    variants.append(Ours("ours-unoptimised", model, bench_setup.wav))
    return variants


def test_bench_stream_speedups(benchmark: Any, bench_setup: BenchSetup, ours: Ours,
                               speedup_variants: list[Ours]) -> None:
    benchmark.group = "stream-speedups"
    results = _lockstep(benchmark, ours, speedup_variants, SPEEDUP_FRAMES)
    summaries = {name: _summary(r) for name, r in results.items()}
    for name, r in results.items():
        if name != "ours":
            summaries[name]["code_mismatch_frames"] = _code_mismatches(results["ours"], r)
    record(benchmark, f"speedups one at a time ({SPEEDUP_FRAMES} streamed frames)", summaries,
           "total_p50_ms")
    for name in results:
        if name != "ours":
            assert summaries[name]["code_mismatch_frames"] == 0, f"codes differ from {name}"
