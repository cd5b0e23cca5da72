"""End-to-end latency per frame of the chat server with the echo backend.

A real `moshi serve --backend echo --echo-delay 0` subprocess, a real websocket client
streaming 5 s of speech in real time (one 80 ms frame every 80 ms). Latency of frame k =
time from sending user frame k (Opus) to receiving reply frame k (Opus), so it holds the
Opus coding on both sides, the websocket, the queue and Mimi's encode + decode step.
Two codec sizes: the tiny test Mimi and the full-size official architecture (random
weights: the same compute as the real model). MOSHI_BENCH_DEVICE=cuda runs the server's
codec on a GPU.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "chat"))
from chatutil import MIMI, serve, speech  # noqa: E402

from mimi_moshi_chat.client import ChatClient, stream_file  # noqa: E402


@pytest.fixture(scope="module")
def full_size_mimi(tmp_path_factory):
    import torch
    from mimi_codec import MimiModel, save_mimi
    from mimi_codec.config import PRESETS

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("mimi") / "mimi_random_full.safetensors"
    save_mimi(MimiModel(PRESETS["mimi"]), path)
    return ["--mimi-weights", str(path)]


def wait_idle(server, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while server.status()["active_sessions"] and time.monotonic() < deadline:
        time.sleep(0.05)


def measure(url: str, pcm: np.ndarray) -> np.ndarray:
    async def go():
        async with await ChatClient.connect(url) as client:
            return await stream_file(client, pcm, realtime=True)
    conv = asyncio.run(go())
    assert conv.errors == () and len(conv.reply) == len(pcm)
    return conv.latency_ms


@pytest.mark.parametrize("size", ["tiny", "full"])
def test_bench_chat_echo_latency(benchmark, tmp_path, request, size):
    args = MIMI if size == "tiny" else request.getfixturevalue("full_size_mimi")
    pcm = speech(5.0)
    device = os.environ.get("MOSHI_BENCH_DEVICE", "cpu")
    with serve(["--backend", "echo", *args, "--echo-delay", "0", "--device", device], tmp_path) as server:
        measure(server.url, pcm[:24000])  # warm-up session
        wait_idle(server)
        latency = benchmark.pedantic(measure, args=(server.url, pcm), rounds=1, iterations=1)
        wait_idle(server)
        log = server.log()
    steady = latency[5:]
    info = {"frames": int(len(latency)), "mean_ms": float(steady.mean()), "p50_ms": float(np.median(steady)),
            "p95_ms": float(np.percentile(steady, 95)), "max_ms": float(steady.max())}
    benchmark.extra_info.update(info)
    step = [line for line in log.splitlines() if "closed;" in line][-1]
    print(f"\n{size} Mimi echo, per-frame latency (after 5 frames): {info}\nserver: {step.split('closed; ')[1]}")
    assert len(latency) == len(pcm) // 1920 + (len(pcm) % 1920 > 0)
