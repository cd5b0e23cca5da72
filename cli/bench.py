"""`mimi bench`: how fast Mimi streams on this machine (per-frame latency, real-time factor).

Also the measuring engine the pytest-benchmark suites in `benchmarks/` share: a full-size
model with random weights from a fixed seed (`random_mimi`), a synthetic speech-like test
signal, and frame-by-frame streaming timings with their percentiles.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from mimi_moshi_cli.mimi_common import decoder_precision_option

FRAME = 1920  # samples per Mimi frame at 24 kHz (80 ms)
SAMPLE_RATE = 24000


def synthetic_speech(seconds: float, seed: int = 0, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A deterministic speech-like test signal: gliding harmonic "syllables" and noise bursts.

    Args:
        seconds: length.
        seed: random seed of the pitch contour and noise.
    Returns:
        [T] float32 in about -0.5..0.5, T = round(seconds * sample_rate).
    """
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    f0 = 140 + 60 * np.sin(2 * np.pi * 0.7 * t) + 20 * np.sin(2 * np.pi * 3.1 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    syllables = np.clip(np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6)), 0, None) ** 2
    noise = rng.standard_normal(n) * (np.sin(2 * np.pi * 1.3 * t) > 0.6)
    return (0.25 * voiced * syllables + 0.05 * noise).astype(np.float32)


def calibrate_codebooks(model: Any, seed: int = 0, seconds: float = 8.0) -> None:
    """Give a randomly initialised model codebooks that fit its own latents.

    A fresh model's codebooks are all zero (every code would be 0), and random centroids
    far from the latent would give one code for every frame. Here stage by stage each
    codebook gets centroids drawn around the mean and spread of the residual it will see on
    `synthetic_speech`, so codes vary like real ones. Deterministic for a given seed.

    Args:
        model: a MimiModel, changed in place (its codebook buffers).
        seed: random seed of the centroids and of the calibration signal.
        seconds: length of the calibration signal.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    p = next(model.parameters())
    wav = torch.from_numpy(synthetic_speech(seconds, seed + 1)).to(p)[None, None]
    wav = wav[..., : wav.shape[-1] // FRAME * FRAME]
    with torch.no_grad():
        state = model.init_state(1).encoder
        latent = model.encoder(wav, state.seanet)
        latent = model.encoder_transformer(latent, state.transformer)
        latent = model.downsample(latent, state.downsample)
        for rvq in (model.quantizer.semantic, model.quantizer.acoustic):
            residual = rvq.input_proj(latent)[0].T.double()  # [N, dim]
            for cb in rvq.codebooks:
                mean, std = residual.mean(0), residual.std(0)
                z = torch.randn(cb.bins, cb.dim, generator=gen, dtype=torch.float64)
                centroids = mean + std * z
                usage = 0.5 + torch.rand(cb.bins, generator=gen, dtype=torch.float64)
                cb.embedding_sum.copy_(centroids * usage[:, None])
                cb.cluster_usage.copy_(usage)
                cb._initialized.fill_(1.0)
                idx = torch.cdist(residual, centroids).argmin(-1)
                residual = residual - centroids[idx]


def random_mimi(seed: int = 0, config: Any = None, num_codebooks: int = 8) -> Any:
    """A Mimi model with random weights from a fixed seed (full size by default).

    It costs exactly what the official model costs; the global torch RNG is left untouched.

    Args:
        seed: random seed.
        config: None (official architecture), a MimiConfig, a dict, a preset name or a JSON path.
        num_codebooks: default K of `encode`.
    Returns:
        a MimiModel in eval mode, float32, on the CPU.
    """
    import torch

    from mimi_codec import MimiConfig, MimiModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MimiModel(MimiConfig.load(config), num_codebooks=num_codebooks).eval()
    calibrate_codebooks(model, seed)
    return model


@dataclass(frozen=True)
class StreamTimings:
    """Per-frame wall-clock times of a streamed encode and decode.

    Attributes:
        encode_s: [F] seconds to encode each 80 ms frame.
        decode_s: [F] seconds to decode each frame's codes.
        frame_s: seconds of audio per frame (0.08).
    """

    encode_s: np.ndarray
    decode_s: np.ndarray
    frame_s: float

    @property
    def total_s(self) -> np.ndarray:
        """[F] encode + decode seconds per frame."""
        return self.encode_s + self.decode_s

    def summary(self) -> dict[str, float]:
        """Milliseconds per frame (median, p90, p99 of encode, decode, both) and the RTF."""
        out: dict[str, float] = {"frames": float(len(self.encode_s))}
        for name, arr in (("encode", self.encode_s), ("decode", self.decode_s), ("total", self.total_s)):
            for q in (50, 90, 99):
                out[f"{name}_p{q}_ms"] = float(np.percentile(arr, q) * 1e3)
        out["rtf"] = float(self.total_s.sum() / (len(self.total_s) * self.frame_s))
        return out


def stream_timings(model: Any, wav: np.ndarray, warmup: int = 3) -> StreamTimings:
    """Stream `wav` through encode then decode one frame at a time, timing each call.

    Args:
        model: a MimiModel.
        wav: [T] float32 mono at 24 kHz; cut to whole frames.
        warmup: frames streamed (and not timed) first, on a state that is then dropped.
    Returns:
        the per-frame timings.
    """
    import torch

    frames = len(wav) // FRAME
    if frames < 1:
        raise ValueError(f"audio of {len(wav)} samples: expected at least one frame ({FRAME} samples)")
    x = torch.from_numpy(np.ascontiguousarray(wav[: frames * FRAME]))[None, None]
    enc = np.zeros(frames)
    dec = np.zeros(frames)
    with torch.inference_mode():
        with model.streaming(1):
            for i in range(min(warmup, frames)):
                model.decode(model.encode(x[..., i * FRAME:(i + 1) * FRAME]))
        with model.streaming(1):
            for i in range(frames):
                chunk = x[..., i * FRAME:(i + 1) * FRAME]
                t0 = time.perf_counter()
                codes = model.encode(chunk)
                t1 = time.perf_counter()
                model.decode(codes)
                t2 = time.perf_counter()
                enc[i], dec[i] = t1 - t0, t2 - t1
    return StreamTimings(enc, dec, FRAME / SAMPLE_RATE)


@click.command("bench")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Mimi safetensors checkpoint (default: random full-size weights, same cost).")
@click.option("--config", "config", default=None, help="Config JSON path or preset name (default: official).")
@click.option("--input", "input_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Audio file to stream (default: a synthetic speech-like signal).")
@click.option("--seconds", type=click.FloatRange(min=0.08), default=10.0, show_default=True,
              help="Seconds of audio to stream.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch intra-op threads for this run (default: torch's own choice).")
@click.option("--no-speedups", is_flag=True, help="Run the plain, unoptimised streaming path.")
@decoder_precision_option
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as JSON.")
def bench(weights: Path | None, config: str | None, input_path: Path | None, seconds: float,
          threads: int | None, no_speedups: bool, decoder_precision: str, as_json: bool) -> None:
    """Stream audio frame by frame through encode + decode and print the real-time factor."""
    import json

    import torch

    from mimi_codec import load_mimi

    if threads is not None:
        torch.set_num_threads(threads)
    if weights is not None:
        model = load_mimi(weights, config=config)
    else:
        model = random_mimi(0, config)
    if no_speedups:
        model.set_speedups(None)
    model.set_decoder_precision(decoder_precision)
    if input_path is not None:
        from mimi_codec.audio import load_audio

        wav = load_audio(input_path).wav[: int(seconds * SAMPLE_RATE)]
    else:
        wav = synthetic_speech(seconds)
    t = stream_timings(model, wav)
    s = t.summary()
    s["threads"] = float(torch.get_num_threads())
    s["decoder_fp16"] = float(decoder_precision == "fp16")
    if as_json:
        click.echo(json.dumps(s, indent=1))
        return
    n = int(s["frames"])
    click.echo(f"Mimi streaming, {n} frames of 80 ms ({n * 0.08:.2f} s), batch 1, "
               f"{torch.get_num_threads()} threads, speedups {'off' if no_speedups else 'on'}, "
               f"decoder {decoder_precision}")
    for name in ("encode", "decode", "total"):
        click.echo(f"  {name:7s} per frame: median {s[f'{name}_p50_ms']:7.2f} ms   "
                   f"p90 {s[f'{name}_p90_ms']:7.2f} ms   p99 {s[f'{name}_p99_ms']:7.2f} ms")
    verdict = "real time" if s["rtf"] < 1 else "NOT real time"
    click.echo(f"  real-time factor {s['rtf']:.3f} (compute / audio; {verdict}, "
               f"{1 / s['rtf'] if s['rtf'] else math.inf:.2f}x real-time speed)")
