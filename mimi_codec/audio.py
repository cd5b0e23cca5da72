"""Audio in and out for the codec: any file libsndfile reads -> mono float32 at 24 kHz, and back.

Mixing to mono averages the channels; resampling uses soxr (libsoxr, "very high quality").
numpy, soundfile and soxr only: no torch here.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

#: Mimi's sample rate.
SAMPLE_RATE = 24000

AudioSource = str | os.PathLike[str] | BinaryIO


@dataclass(frozen=True)
class Audio:
    """Audio loaded for the codec.

    Attributes:
        wav: [T] float32 mono samples at `sample_rate`.
        sample_rate: rate of `wav` (24000 unless asked otherwise).
        source_sample_rate: rate of the file as stored.
        source_channels: channels in the file (mixed down to one).
        source_num_samples: length of the file in samples at its own rate.
        name: the file's name, for messages.
    """

    wav: np.ndarray  # [T] float32 mono at sample_rate
    sample_rate: int  # rate of wav
    source_sample_rate: int  # rate of the file
    source_channels: int  # channels of the file
    source_num_samples: int  # samples per channel in the file
    name: str  # file name for messages

    @property
    def duration(self) -> float:
        """Seconds of audio."""
        return len(self.wav) / self.sample_rate


def _check_rate(rate: object, what: str) -> int:
    if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
        raise ValueError(f"{what} {rate!r}: expected a positive integer number of Hz")
    return rate


def resample(wav: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample mono audio with soxr (very high quality); returns float32.

    Args:
        wav: [T] float samples at `from_rate`.
        from_rate, to_rate: sample rates in Hz.

    Returns:
        [round(T * to_rate / from_rate)] float32 samples (soxr's length) at `to_rate`.
    """
    _check_rate(from_rate, "sample rate")
    _check_rate(to_rate, "sample rate")
    wav = np.ascontiguousarray(wav, dtype=np.float32)
    if from_rate == to_rate or len(wav) == 0:
        return wav.copy()
    return soxr.resample(wav, from_rate, to_rate, quality="VHQ").astype(np.float32, copy=False)


def _check_path(path: str | os.PathLike[str], label: str) -> None:
    if not os.path.exists(path):
        raise FileNotFoundError(f"input {label} does not exist")
    if os.path.isdir(path):
        raise IsADirectoryError(f"input {label} is a folder, not an audio file")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{label}: empty file (0 bytes), not audio")


def _not_audio(label: str, error: Exception) -> ValueError:
    detail = getattr(error, "error_string", None) or str(error)
    if "does not exist" in detail:  # libsndfile's words when a decoder gives up on garbage
        detail = "unrecognised or corrupt data"
    return ValueError(f"{label}: not an audio file libsndfile can read ({detail})")


def probe_audio(path: str | os.PathLike[str], name: str | None = None) -> None:
    """Check, without decoding it, that a path is an audio file with samples in it.

    Catches what `load_audio` would refuse up front (for a command line that wants to fail
    before it loads a model); mp3 lengths are libsndfile's estimate.

    Raises:
        FileNotFoundError, IsADirectoryError: no such file, or a folder.
        ValueError: an empty file, not audio libsndfile can read, or no samples.
    """
    label = name or os.fspath(path)
    _check_path(path, label)
    try:
        info = sf.info(os.fspath(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise _not_audio(label, e) from None
    if info.frames == 0:
        raise ValueError(f"{label}: empty audio (0 samples)")


def load_audio(source: AudioSource, sample_rate: int = SAMPLE_RATE, name: str | None = None) -> Audio:
    """Read an audio file, mix it to mono and resample it.

    Args:
        source: a path, or a binary file object holding a whole file (e.g. stdin's bytes).
        sample_rate: rate to return (24000 for Mimi).
        name: how to call the source in messages (default: the path).

    Returns:
        Audio with wav [T] float32 mono at `sample_rate`.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: not audio libsndfile can read, no samples, or non-finite samples.
    """
    _check_rate(sample_rate, "sample_rate")
    if isinstance(source, (str, os.PathLike)):
        label = name or os.fspath(source)
        _check_path(source, label)
    else:
        label = name or str(getattr(source, "name", "") or "<stream>")
    try:
        data, rate = sf.read(source, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:  # soundfile's failures on garbage input
        raise _not_audio(label, e) from None
    frames, channels = data.shape
    if frames == 0:
        raise ValueError(f"{label}: empty audio (0 samples)")
    if not np.isfinite(data).all():
        raise ValueError(f"{label}: audio contains NaN or infinite samples")
    mono = data.mean(axis=1, dtype=np.float32) if channels > 1 else data[:, 0]
    wav = resample(mono, int(rate), sample_rate)
    return Audio(wav, sample_rate, int(rate), channels, frames, label)


def format_for_name(name: str | os.PathLike[str]) -> str:
    """The soundfile format for a file name's extension ("out.wav" -> "WAV").

    Raises:
        ValueError: the extension names no format libsndfile writes.
    """
    ext = os.path.splitext(os.fspath(name))[1].lstrip(".").upper()
    formats = sf.available_formats()
    if ext == "OGA":
        ext = "OGG"
    if ext not in formats:
        known = ", ".join(f".{f.lower()}" for f in ("WAV", "FLAC", "OGG", "MP3") if f in formats)
        raise ValueError(f"output {os.fspath(name)}: unknown audio file extension {ext.lower() or '(none)'!r} "
                         f"(expected one of {known})")
    return ext


def save_audio(
    target: str | os.PathLike[str] | BinaryIO,
    wav: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    out_rate: int | None = None,
    num_samples: int | None = None,
    format: str | None = None,
) -> int:
    """Write mono audio, optionally resampled to another rate.

    Args:
        target: a path (format from its extension; .wav is 16-bit PCM) or a binary file
            object (written as WAV unless `format` says otherwise).
        wav: [T] float samples at `sample_rate`; clipped to [-1, 1] for integer formats.
        sample_rate: rate of `wav`.
        out_rate: rate to write (None: `sample_rate`).
        num_samples: exact output length after resampling (trim or pad with zeros);
            None keeps the resampler's length.
        format: soundfile format name ("WAV", "FLAC", ...), None to infer from the path.

    Returns:
        samples written.
    """
    out_rate = sample_rate if out_rate is None else _check_rate(out_rate, "output sample rate")
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    out = resample(wav, sample_rate, out_rate)
    if num_samples is not None:
        if num_samples < 0:
            raise ValueError(f"num_samples {num_samples}: expected >= 0")
        out = out[:num_samples] if len(out) >= num_samples else np.pad(out, (0, num_samples - len(out)))
    if isinstance(target, (str, os.PathLike)):
        sf.write(target, out, out_rate, format=format or format_for_name(target))
    else:
        fmt = format or "WAV"
        buf = io.BytesIO()  # WAV needs a seekable file to fix its header; pipes are not
        sf.write(buf, out, out_rate, format=fmt, subtype=sf.default_subtype(fmt))
        target.write(buf.getvalue())
    return len(out)
