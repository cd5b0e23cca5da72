"""The implementations a comparison benchmark runs, behind one small interface.

`Ours` runs this project's MimiModel in-process (optionally with its speedups off);
`Peer` drives kyutai's `moshi` ("reference") or `rustymimi` in a subprocess running
`peer_server.py` with the peer's own Python, found through MIMI_BENCH_REFERENCE_PYTHON
(e.g. the python of a separate venv that has them). Without that variable, or when the package is missing
there, the peer is simply absent and the comparison runs without it.

Every implementation times its own calls with time.perf_counter, so the pipe to a peer
costs nothing in its numbers. Callers interleave implementations frame by frame (or round
by round) so machine noise hits all of them alike.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

FRAME = 1920
SERVER = Path(__file__).with_name("peer_server.py")
PEER_NAMES = ("reference", "rustymimi")
PEER_MODULE = {"reference": "moshi", "rustymimi": "rustymimi"}


@dataclass
class FrameResult:
    """One streamed frame: seconds to encode and decode, the codes [K] and audio [1920]."""

    encode_s: float
    decode_s: float
    codes: np.ndarray
    audio_head: np.ndarray


class Ours:
    """This project's Mimi, in this process.

    Args:
        model: a MimiModel.
        wav: [T] float32 24 kHz audio the workloads read from.
    """

    def __init__(self, name: str, model: Any, wav: np.ndarray) -> None:
        self.name = name
        self.model = model
        self.x = torch.from_numpy(np.ascontiguousarray(wav))[None, None]
        self._ctx: Any = None

    def stream_start(self) -> None:
        self.stream_stop()
        self._ctx = self.model.streaming(1)
        self._ctx.__enter__()

    def stream_stop(self) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(None, None, None)
            self._ctx = None

    def stream_frame(self, i: int) -> FrameResult:
        chunk = self.x[..., i * FRAME:(i + 1) * FRAME]
        with torch.inference_mode():
            t0 = time.perf_counter()
            codes = self.model.encode(chunk)
            t1 = time.perf_counter()
            audio = self.model.decode(codes)
            t2 = time.perf_counter()
        return FrameResult(t1 - t0, t2 - t1, codes.reshape(-1).numpy(), audio.reshape(-1)[:8].numpy())

    def encode_file(self, frames: int) -> tuple[float, np.ndarray]:
        with torch.inference_mode():
            t0 = time.perf_counter()
            codes = self.model.encode(self.x[..., : frames * FRAME])
            return time.perf_counter() - t0, codes.numpy()

    def decode_file(self, codes: np.ndarray) -> tuple[float, np.ndarray]:
        with torch.inference_mode():
            c = torch.from_numpy(codes)
            t0 = time.perf_counter()
            audio = self.model.decode(c)
            return time.perf_counter() - t0, audio.numpy()

    def close(self) -> None:
        self.stream_stop()


#: `WeightReadFloor` skips tensors smaller than this.
SMALL_BYTES = 64 << 10


class WeightReadFloor:
    """Not a codec: each "frame" reads once every weight a streamed frame of `model` reads, a
    plain `sum` over each tensor in the frame's order (the encode side, then the decode side),
    and times each side. A streamed frame cannot beat it on this machine's memory; it is the
    floor the "streaming <= 1.5x our whole-file cost" target is weighed against.

    What a frame reads: the SEANets', transformers' and resampling convs' parameters (the
    kernels read derived copies of the same size), the quantizer's projections, and per used
    codebook its distance table (encode) and centroids (decode); tensors under 64 KiB (biases,
    norms, scales: under 1 MB in all) are left out, so the floor pays no call per small tensor
    and stays a lower bound.

    Args:
        model: our MimiModel; its tensors are read in place (in huge pages after `load_mimi`).
        num_codebooks: codebooks a frame uses.
    """

    name = "weight-read floor"

    def __init__(self, model: Any, num_codebooks: int = 8) -> None:
        q = model.quantizer
        cbs = [*q.semantic.codebooks[: q.n_q_semantic],
               *q.acoustic.codebooks[: num_codebooks - q.n_q_semantic]]

        def large(modules: list[Any], extra: list[torch.Tensor]) -> list[torch.Tensor]:
            tensors = [p.detach() for m in modules for p in m.parameters()] + extra
            return [t for t in tensors if t.nbytes >= SMALL_BYTES]

        self.encode_side = large([model.encoder, model.encoder_transformer, model.downsample,
                                  q.semantic.input_proj, q.acoustic.input_proj],
                                 [cb.distance_table() for cb in cbs])
        self.decode_side = large([q.semantic.output_proj, q.acoustic.output_proj, model.upsample,
                                  model.decoder_transformer, model.decoder],
                                 [cb.embedding for cb in cbs])
        self.bytes = sum(t.nbytes for t in self.encode_side + self.decode_side)

    def stream_start(self) -> None:
        pass

    def stream_stop(self) -> None:
        pass

    def stream_frame(self, i: int) -> FrameResult:
        with torch.inference_mode():
            t0 = time.perf_counter()
            for t in self.encode_side:
                t.sum()
            t1 = time.perf_counter()
            for t in self.decode_side:
                t.sum()
            t2 = time.perf_counter()
        return FrameResult(t1 - t0, t2 - t1, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))


def reference_python() -> str | None:
    """The peer Python from MIMI_BENCH_REFERENCE_PYTHON, or None when unset or missing."""
    path = os.environ.get("MIMI_BENCH_REFERENCE_PYTHON")
    return path if path and Path(path).is_file() else None


def peer_available(impl: str) -> bool:
    """True when the peer Python exists and can import the package of `impl`."""
    py = reference_python()
    if py is None:
        return False
    probe = subprocess.run([py, "-c", f"import {PEER_MODULE[impl]}"], capture_output=True)
    return probe.returncode == 0


class Peer:
    """A peer implementation in a subprocess (see peer_server.py for the protocol).

    Args:
        impl: "reference" or "rustymimi".
        weights: checkpoint in the official layout (the same file our model was saved to).
        wav_npy: .npy file of the [T] float32 audio.
        threads: torch / rayon threads of the subprocess (None: the library's default).
    """

    def __init__(self, impl: str, weights: Path, wav_npy: Path, threads: int | None,
                 tmp_dir: Path) -> None:
        py = reference_python()
        if py is None:
            raise RuntimeError("MIMI_BENCH_REFERENCE_PYTHON is not set")
        self.name = impl
        self.tmp_dir = tmp_dir
        env = dict(os.environ)
        if threads is not None:
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
                env[var] = str(threads)
        self.proc = subprocess.Popen([py, str(SERVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=sys.stderr, env=env, text=True, bufsize=1)
        self._call(cmd="load", impl=impl, weights=str(weights), wav=str(wav_npy), num_codebooks=8)

    def _call(self, **req: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"peer {self.name} exited (code {self.proc.poll()})")
        rep = json.loads(line)
        if "error" in rep:
            raise RuntimeError(f"peer {self.name}: {rep['error']}")
        return rep

    def stream_start(self) -> None:
        self._call(cmd="stream_start")

    def stream_stop(self) -> None:
        self._call(cmd="stream_stop")

    def stream_frame(self, i: int) -> FrameResult:
        r = self._call(cmd="stream_frame", index=i)
        return FrameResult(r["encode_s"], r["decode_s"], np.asarray(r["codes"], dtype=np.int64),
                           np.asarray(r["audio"], dtype=np.float32))

    def encode_file(self, frames: int) -> tuple[float, np.ndarray]:
        out = self.tmp_dir / f"{self.name}_codes.npy"
        r = self._call(cmd="encode_file", frames=frames, out=str(out))
        return r["seconds"], np.load(out)

    def decode_file(self, codes: np.ndarray) -> tuple[float, np.ndarray]:
        src = self.tmp_dir / f"{self.name}_in_codes.npy"
        out = self.tmp_dir / f"{self.name}_audio.npy"
        np.save(src, codes.astype(np.int64))
        r = self._call(cmd="decode_file", codes=str(src), out=str(out))
        return r["seconds"], np.load(out)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self._call(cmd="quit")
            except (RuntimeError, BrokenPipeError, json.JSONDecodeError):
                pass
            self.proc.wait(timeout=30)


def peak_memory(impl: str, weights: Path, wav_npy: Path, frames: int,
                threads: int | None) -> dict[str, float]:
    """Peak RSS of a fresh process that loads `impl` and encodes + decodes `frames` frames.

    impl "ours" runs with this Python, the peers with MIMI_BENCH_REFERENCE_PYTHON.
    """
    py = sys.executable if impl == "ours" else reference_python()
    assert py is not None
    env = dict(os.environ)
    if threads is not None:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
            env[var] = str(threads)
    out = subprocess.run([py, str(SERVER), "--peak-memory", impl, str(weights), str(wav_npy), str(frames)],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])
