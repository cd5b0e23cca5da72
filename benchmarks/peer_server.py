"""Runs Mimi workloads on a peer implementation (kyutai's `moshi`, or `rustymimi`) for the
comparison benchmarks. Started by `peers.py` with the peer's own Python (its environment
pins an older numpy, so it cannot share our process); it imports this project only for the
impl "ours" (used to measure our own peak memory in a fresh process the same way).

Protocol: one JSON object per line on stdin, one JSON reply per line on stdout.
  {"cmd": "load", "impl": "reference"|"rustymimi", "weights": PATH, "wav": NPY, "num_codebooks": 8}
  {"cmd": "stream_start"}                      fresh streaming state
  {"cmd": "stream_stop"}                       leave streaming (whole-file calls need this)
  {"cmd": "stream_frame", "index": i}          encode frame i of the wav, decode its codes
      -> {"encode_s", "decode_s", "codes": [K ints], "audio": [first 8 samples]}
  {"cmd": "encode_file", "frames": F, "out": NPY?}   whole-file encode of the first F frames
      -> {"seconds", "frames"}                (codes saved to `out` as int64 [1, K, F] if given)
  {"cmd": "decode_file", "codes": NPY, "out": NPY?}  whole-file decode of saved codes -> {"seconds"}
  {"cmd": "quit"}
Timings are taken inside this process with time.perf_counter around the call alone.

`python peer_server.py --peak-memory IMPL WEIGHTS WAV FRAMES` instead encodes and decodes the
first FRAMES frames in one go and prints {"rss_model_mb", "rss_peak_mb"} (VmHWM).
"""

from __future__ import annotations

import json
import resource
import sys
import time

import numpy as np

FRAME = 1920


class Reference:
    """kyutai's PyTorch `moshi` package."""

    def __init__(self, weights: str, num_codebooks: int) -> None:
        import torch
        from moshi.models.loaders import get_mimi

        self.torch = torch
        self.model = get_mimi(weights, device="cpu", num_codebooks=num_codebooks)
        self.ctx = None

    def stream_start(self) -> None:
        self.stream_stop()
        self.ctx = self.model.streaming(1)
        self.ctx.__enter__()

    def stream_stop(self) -> None:
        if self.ctx is not None:
            self.ctx.__exit__(None, None, None)
            self.ctx = None

    def stream_frame(self, x: np.ndarray) -> tuple[float, float, np.ndarray, np.ndarray]:
        with self.torch.no_grad():
            t = self.torch.from_numpy(x)
            t0 = time.perf_counter()
            codes = self.model.encode(t)
            t1 = time.perf_counter()
            audio = self.model.decode(codes)
            t2 = time.perf_counter()
        return t1 - t0, t2 - t1, codes.numpy(), audio.numpy()

    def encode(self, x: np.ndarray) -> np.ndarray:
        with self.torch.no_grad():
            return self.model.encode(self.torch.from_numpy(x)).numpy()

    def decode(self, codes: np.ndarray) -> np.ndarray:
        with self.torch.no_grad():
            return self.model.decode(self.torch.from_numpy(codes)).numpy()


class Rusty:
    """rustymimi (kyutai's Rust/candle Mimi behind a Python binding)."""

    def __init__(self, weights: str, num_codebooks: int) -> None:
        import rustymimi

        self.tok = rustymimi.Tokenizer(weights)
        self.num_codebooks = num_codebooks

    def stream_start(self) -> None:
        self.tok.reset()

    def stream_stop(self) -> None:
        self.tok.reset()

    def stream_frame(self, x: np.ndarray) -> tuple[float, float, np.ndarray, np.ndarray]:
        t0 = time.perf_counter()
        codes = self.tok.encode_step(x)
        t1 = time.perf_counter()
        audio = self.tok.decode_step(codes)
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1, np.asarray(codes), np.asarray(audio)

    def encode(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.tok.encode(x))[:, : self.num_codebooks]

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return np.asarray(self.tok.decode(codes.astype(np.uint32)))


class Ours:
    """This project's mimi_codec (only for --peak-memory with our own Python)."""

    def __init__(self, weights: str, num_codebooks: int) -> None:
        import torch
        from mimi_codec import load_mimi

        self.torch = torch
        self.model = load_mimi(weights, num_codebooks=num_codebooks)

    def encode(self, x: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.model.encode(self.torch.from_numpy(x)).numpy()

    def decode(self, codes: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.model.decode(self.torch.from_numpy(codes)).numpy()


IMPLS = {"reference": Reference, "rustymimi": Rusty, "ours": Ours}


def rss_mb() -> float:
    """Peak RSS of this process so far (VmHWM; ru_maxrss would start from the parent's peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory(impl: str, weights: str, wav_path: str, frames: int) -> dict[str, float]:
    wav = np.load(wav_path)[None, None, : frames * FRAME].astype(np.float32)
    model = IMPLS[impl](weights, 8)
    base = rss_mb()
    model.decode(model.encode(wav))
    return {"rss_model_mb": base, "rss_peak_mb": rss_mb()}


def serve() -> None:
    model = None
    wav = None
    out = sys.stdout
    sys.stdout = sys.stderr  # anything a peer library prints must not corrupt the replies
    for line in sys.stdin:
        req = json.loads(line)
        cmd = req["cmd"]
        if cmd == "quit":
            break
        if cmd == "load":
            model = IMPLS[req["impl"]](req["weights"], int(req.get("num_codebooks", 8)))
            wav = np.load(req["wav"]).astype(np.float32)
            rep: dict = {"ok": True}
        elif cmd == "stream_start":
            model.stream_start()
            rep = {"ok": True}
        elif cmd == "stream_stop":
            model.stream_stop()
            rep = {"ok": True}
        elif cmd == "stream_frame":
            i = int(req["index"])
            x = np.ascontiguousarray(wav[None, None, i * FRAME:(i + 1) * FRAME])
            enc_s, dec_s, codes, audio = model.stream_frame(x)
            rep = {"encode_s": enc_s, "decode_s": dec_s, "codes": codes.reshape(-1).tolist(),
                   "audio": audio.reshape(-1)[:8].tolist()}
        elif cmd == "encode_file":
            n = int(req["frames"]) * FRAME
            x = np.ascontiguousarray(wav[None, None, :n])
            t0 = time.perf_counter()
            codes = model.encode(x)
            rep = {"seconds": time.perf_counter() - t0, "frames": int(codes.shape[-1])}
            if req.get("out"):
                np.save(req["out"], codes.astype(np.int64))
        elif cmd == "decode_file":
            codes = np.load(req["codes"])
            t0 = time.perf_counter()
            audio = model.decode(codes)
            rep = {"seconds": time.perf_counter() - t0}
            if req.get("out"):
                np.save(req["out"], audio.astype(np.float32))
        else:
            rep = {"error": f"unknown command {cmd!r}"}
        out.write(json.dumps(rep) + "\n")
        out.flush()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--peak-memory":
        impl, weights, wav_path, frames = sys.argv[2:6]
        print(json.dumps(peak_memory(impl, weights, wav_path, int(frames))))
    else:
        serve()
