"""Training data: audio files from folders and manifests -> random, augmented segments.

Any format and rate libsndfile reads is loaded with `mimi_codec.audio` (mono, 24 kHz).
Batch `step` depends only on (seed, step), so a resumed run sees exactly the batches an
uninterrupted one would, with nothing to save but the step.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ..audio import SAMPLE_RATE, load_audio
from .config import DataConfig

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".aiff", ".aif", ".au")


def find_audio(sources: list[str | Path]) -> list[Path]:
    """Resolve folders (searched recursively), audio files and manifests to audio paths.

    A manifest is a `.txt` file with one audio path per line (relative paths are relative
    to the manifest; blank lines and lines starting with '#' are skipped).

    Args:
        sources: folders, audio files or manifests.
    Returns:
        sorted, de-duplicated audio paths.
    Raises:
        ValueError: a source does not exist, or nothing was found.
    """
    found: set[Path] = set()
    for src in sources:
        p = Path(src)
        if p.is_dir():
            for root, _, files in os.walk(p):
                found.update(Path(root) / f for f in files if f.lower().endswith(AUDIO_EXTENSIONS))
        elif p.is_file() and p.suffix.lower() == ".txt":
            for line in p.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    q = Path(line) if Path(line).is_absolute() else p.parent / line
                    if not q.is_file():
                        raise ValueError(f"manifest {p}: {line!r} does not exist")
                    found.add(q)
        elif p.is_file():
            found.add(p)
        else:
            raise ValueError(f"data source {str(src)!r} does not exist")
    if not found:
        raise ValueError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) in {[str(s) for s in sources]}")
    return sorted(found)


def _duration(path: Path) -> float:
    try:
        return float(sf.info(str(path)).duration)
    except Exception as exc:  # libsndfile's own error types
        raise ValueError(f"{path}: not audio libsndfile can read ({exc})") from exc


@dataclass(frozen=True)
class AudioFile:
    """One file of the data set."""

    path: Path  # where it is
    duration: float  # seconds


class SegmentDataset:
    """Random augmented segments of a set of audio files, deterministic in (seed, step).

    Args:
        sources: folders, files or manifests (see `find_audio`).
        cfg: segment and augmentation settings.
        seed: the run's seed.
        cache_seconds: audio kept decoded in memory (least recently used files are dropped).
        frame_size: segments are a whole number of frames of this many samples.
    """

    def __init__(self, sources: list[str | Path], cfg: DataConfig, seed: int = 0,
                 cache_seconds: float = 3600.0, frame_size: int = 1920) -> None:
        self.cfg = cfg
        self.seed = seed
        self.files = [AudioFile(p, _duration(p)) for p in find_audio(sources)]
        total = sum(f.duration for f in self.files)
        if total <= 0:
            raise ValueError("the training data holds no audio (total duration 0)")
        self.weights = np.array([f.duration / total for f in self.files])
        frames = int(cfg.segment_seconds * SAMPLE_RATE) // frame_size
        if frames < 1:
            raise ValueError(f"data.segment_seconds {cfg.segment_seconds}: shorter than one frame")
        self.segment = frames * frame_size
        self._cache: OrderedDict[Path, np.ndarray] = OrderedDict()
        self._cache_samples = int(cache_seconds * SAMPLE_RATE)

    @property
    def total_seconds(self) -> float:
        """Seconds of audio in the data set."""
        return float(sum(f.duration for f in self.files))

    def _load(self, path: Path) -> np.ndarray:
        wav = self._cache.get(path)
        if wav is not None:
            self._cache.move_to_end(path)
            return wav
        wav = load_audio(path).wav
        self._cache[path] = wav
        while sum(len(w) for w in self._cache.values()) > self._cache_samples and len(self._cache) > 1:
            self._cache.popitem(last=False)
        return wav

    def segment_at(self, rng: np.random.Generator) -> np.ndarray:
        """One normalised, augmented segment [segment] float32 drawn with `rng`."""
        f = self.files[int(rng.choice(len(self.files), p=self.weights))]
        wav = self._load(f.path)
        n = self.segment
        if len(wav) > n:
            start = int(rng.integers(0, len(wav) - n + 1))
            seg = wav[start: start + n].astype(np.float64)
        else:
            seg = np.zeros(n)
            seg[: len(wav)] = wav
        return augment(seg, self.cfg, rng).astype(np.float32)

    def batch(self, step: int) -> torch.Tensor:
        """The batch of a training step.

        Args:
            step: training step (0-based).
        Returns:
            [batch_size, 1, segment] float32 audio.
        """
        rng = np.random.default_rng([self.seed, step])
        segs = [self.segment_at(rng) for _ in range(self.cfg.batch_size)]
        return torch.from_numpy(np.stack(segs)[:, None, :])


def _rms_db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(x ** 2) + 1e-12)


def _pink(n: int, rng: np.random.Generator) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec))
    spec[1:] /= np.sqrt(f[1:])
    return np.fft.irfft(spec, n)


def _eq(x: np.ndarray, max_db: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth random EQ curve: a few gains on a log-frequency grid, interpolated."""
    spec = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    knots_f = np.geomspace(50, SAMPLE_RATE / 2, 6)
    knots_g = rng.uniform(-max_db, max_db, len(knots_f))
    gain_db = np.interp(np.log(np.maximum(freqs, 50)), np.log(knots_f), knots_g)
    return np.fft.irfft(spec * 10 ** (gain_db / 20), len(x))


def _reverb(x: np.ndarray, rt60_range: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Convolve with a synthetic room response: exponentially decaying noise, mixed wet/dry."""
    rt60 = rng.uniform(*rt60_range)
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    ir[0] = 1.0
    ir /= np.sqrt(np.sum(ir ** 2))
    size = len(x) + n
    wet = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(ir, size), size)[: len(x)]
    mix = rng.uniform(0.2, 0.7)
    return (1 - mix) * x + mix * wet


def augment(seg: np.ndarray, cfg: DataConfig, rng: np.random.Generator) -> np.ndarray:
    """Loudness-normalise a segment and apply random EQ, reverb, noise and gain.

    Args:
        seg: [T] float64 audio.
        cfg: augmentation settings.
        rng: random generator (every draw comes from it, in a fixed order).
    Returns:
        [T] float64 audio, peak at most 0.99.
    """
    # Draw every random number in a fixed order, whether or not it is used, so that the
    # choices of one augmentation never shift those of the next.
    do_eq, do_rev, do_noise = rng.random(3) < (cfg.eq_prob, cfg.reverb_prob, cfg.noise_prob)
    eq_rng, rev_rng, noise_rng = (np.random.default_rng(rng.integers(2 ** 63)) for _ in range(3))
    gain = rng.uniform(-cfg.gain_db, cfg.gain_db)
    if do_eq:
        seg = _eq(seg, cfg.eq_db, eq_rng)
    if do_rev:
        seg = _reverb(seg, cfg.reverb_rt60, rev_rng)
    if _rms_db(seg) > -70:  # not silence
        seg = seg * 10 ** ((cfg.loudness_db - _rms_db(seg)) / 20)
    if do_noise:
        snr = noise_rng.uniform(*cfg.noise_snr_db)
        noise = _pink(len(seg), noise_rng) if noise_rng.random() < 0.5 else noise_rng.standard_normal(len(seg))
        level = max(_rms_db(seg), cfg.loudness_db) - snr
        seg = seg + noise * 10 ** ((level - _rms_db(noise)) / 20)
    seg = seg * 10 ** (gain / 20)
    peak = np.max(np.abs(seg))
    if peak > 0.99:
        seg = seg * (0.99 / peak)
    return seg
