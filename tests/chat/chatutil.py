"""Helpers for the chat tests: real `moshi serve` subprocesses on free localhost ports."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parents[1]
FIXTURES = TESTS / "fixtures"
DATA = TESTS / "data"
MIMI = ["--mimi-weights", str(FIXTURES / "mimi_tiny.safetensors"), "--mimi-config", str(FIXTURES / "mimi_tiny.json")]
LM = ["--lm-weights", str(FIXTURES / "moshi_tiny.safetensors"), "--lm-config", str(FIXTURES / "moshi_tiny.json"),
      "--tokenizer", str(FIXTURES / "tokenizer_tiny.model")]


def moshi_exe() -> list[str]:
    """The `moshi` console script of this environment."""
    exe = Path(sys.executable).parent / "moshi"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("moshi")
    assert found, "the moshi console script is not installed"
    return [found]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running `moshi serve`."""

    proc: subprocess.Popen
    port: int
    log_path: Path
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{'wss' if self.scheme == 'https' else 'ws'}://127.0.0.1:{self.port}"

    def status(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/status", timeout=10) as r:
            return json.loads(r.read())

    def log(self) -> str:
        return self.log_path.read_text()

    def resources(self) -> dict[str, int]:
        """Open fds, threads and resident memory (KiB) of the server process."""
        pid = self.proc.pid
        rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("VmRSS:"))
        return {"fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": len(os.listdir(f"/proc/{pid}/task")),
                "rss_kib": rss}


@contextlib.contextmanager
def serve(args: list[str], tmp: Path, timeout: float = 90.0, scheme: str = "http") -> Iterator[Server]:
    """Start `moshi serve ARGS --port FREE`, wait until it accepts connections, stop it after."""
    port = free_port()
    log_path = tmp / f"serve-{port}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(moshi_exe() + ["serve", *args, "--host", "127.0.0.1", "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT)
    server = Server(proc, port, log_path, scheme)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moshi serve exited with {proc.returncode}:\n{log_path.read_text()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"moshi serve did not start in {timeout} s:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield server
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def speech(seconds: float | None = None, name: str = "p240_00000.mp3") -> np.ndarray:
    """A real recording as [T] float32 at 24 kHz."""
    from mimi_moshi_cli.chat import read_speech

    pcm = read_speech(str(DATA / name))
    return pcm if seconds is None else pcm[: int(seconds * 24000)]


def wire_frames(pcm: np.ndarray) -> np.ndarray:
    """What the server decodes from `pcm` sent frame by frame through a fresh Opus stream: [F, 1920]."""
    from mimi_moshi_chat.opus import OpusDecoder, OpusEncoder

    enc, dec = OpusEncoder(), OpusDecoder()
    n = -(-len(pcm) // 1920)
    padded = np.zeros(n * 1920, dtype=np.float32)
    padded[: len(pcm)] = pcm
    out = np.concatenate([dec.decode(enc.encode(padded[k * 1920:(k + 1) * 1920])) for k in range(n)])
    return out.reshape(-1, 1920)


def opus_roundtrip(frames: np.ndarray) -> np.ndarray:
    """[F, 1920] frames through a fresh Opus stream, frame by frame, as the server sends them: [F * 1920]."""
    return wire_frames(frames.reshape(-1))[: len(frames)].reshape(-1)
