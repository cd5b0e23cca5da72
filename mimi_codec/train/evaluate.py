"""Codec quality: PESQ (wideband), STOI, ViSQOL (speech mode), mel distance, bitrate.

Reference codecs for comparison run through their command-line tools: Codec2
(`c2enc`/`c2dec`, Debian `codec2`) and Opus (`opusenc`/`opusdec`, Debian `opus-tools`).
PESQ comes from the `pesq` package, STOI from `pystoi`, ViSQOL from `visqol-python`
(a pure-Python port of Google's ViSQOL v3); a metric whose package is missing is None.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ..audio import SAMPLE_RATE, resample
from .losses import mel_distance

METRIC_RATE = 16000  # PESQ wideband, STOI and ViSQOL speech mode all run at 16 kHz


@dataclass(frozen=True)
class Quality:
    """Scores of one degraded signal against its reference (None: metric unavailable).

    Attributes:
        pesq: PESQ wideband MOS-LQO, -0.5..4.5 (higher is better).
        stoi: STOI intelligibility, 0..1 (higher is better).
        visqol: ViSQOL v3 speech-mode MOS-LQO, 1..5 (higher is better).
        mel_distance: mean L1 of log10 mel spectra at 24 kHz (lower is better).
    """

    pesq: float | None
    stoi: float | None
    visqol: float | None
    mel_distance: float


def align(ref: np.ndarray, deg: np.ndarray, max_lag: int) -> np.ndarray:
    """Shift `deg` by the lag (within +-max_lag samples) that best correlates it with `ref`,
    and cut or pad it to ref's length (codecs such as Codec2 add a delay).

    Args:
        ref: [T] reference.
        deg: [T'] degraded signal at the same rate.
        max_lag: largest shift tried, in samples.
    Returns:
        [T] aligned degraded signal.
    """
    n = len(ref)
    deg = np.pad(deg, (0, max(0, n - len(deg))))[: n + max_lag]
    size = 1 << int(np.ceil(np.log2(2 * (n + max_lag))))
    corr = np.fft.irfft(np.fft.rfft(deg, size) * np.conj(np.fft.rfft(ref, size)), size)
    lags = np.concatenate([corr[: max_lag + 1], corr[size - max_lag:]])
    best = int(np.argmax(lags))
    lag = best if best <= max_lag else best - len(lags)
    if lag >= 0:
        out = deg[lag: lag + n]
    else:
        out = np.concatenate([np.zeros(-lag), deg[: n + lag]])
    return np.pad(out, (0, n - len(out))).astype(np.float32)


def _pesq(ref16: np.ndarray, deg16: np.ndarray) -> float | None:
    try:
        from pesq import pesq
    except ImportError:
        return None
    try:
        return float(pesq(METRIC_RATE, ref16, deg16, "wb"))
    except Exception:  # the pesq package raises its own types for silent or too short input
        return None


def _stoi(ref16: np.ndarray, deg16: np.ndarray) -> float | None:
    try:
        from pystoi import stoi
    except ImportError:
        return None
    return float(stoi(ref16, deg16, METRIC_RATE, extended=False))


def _visqol(ref16: np.ndarray, deg16: np.ndarray) -> float | None:
    try:
        from visqol import VisqolApi
    except ImportError:
        return None
    api = VisqolApi()
    api.create(mode="speech")
    result = api.measure_from_arrays(ref16.astype(np.float64), deg16.astype(np.float64), sample_rate=METRIC_RATE)
    return float(result.moslqo)


def quality(ref: np.ndarray, deg: np.ndarray, sample_rate: int = SAMPLE_RATE, visqol: bool = True) -> Quality:
    """Score `deg` against `ref` (both mono, same rate; deg is aligned to ref first).

    Args:
        ref: [T] reference audio.
        deg: [T'] decoded audio.
        sample_rate: rate of both.
        visqol: compute ViSQOL (the slowest metric).
    """
    ref = np.asarray(ref, dtype=np.float32).reshape(-1)
    deg = align(ref, np.asarray(deg, dtype=np.float32).reshape(-1), max_lag=sample_rate // 10)
    ref16 = resample(ref, sample_rate, METRIC_RATE).astype(np.float64)
    deg16 = resample(deg, sample_rate, METRIC_RATE).astype(np.float64)
    r24 = resample(ref, sample_rate, SAMPLE_RATE)
    d24 = resample(deg, sample_rate, SAMPLE_RATE)
    return Quality(
        pesq=_pesq(ref16, deg16),
        stoi=_stoi(ref16, deg16),
        visqol=_visqol(ref16, deg16) if visqol else None,
        mel_distance=mel_distance(torch.from_numpy(d24), torch.from_numpy(r24)),
    )


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise OSError(f"{name} is not installed (Debian/Ubuntu: apt-get install {package})")
    return path


def codec2_roundtrip(wav: np.ndarray, sample_rate: int = SAMPLE_RATE, mode: int = 1200) -> np.ndarray:
    """Encode and decode with Codec2 (8 kHz) at `mode` bit/s; returns audio at `sample_rate`.

    Args:
        wav: [T] float audio.
        sample_rate: its rate.
        mode: Codec2 mode (3200, 2400, 1600, 1400, 1300, 1200, 700C, ...).
    """
    enc, dec = _tool("c2enc", "codec2"), _tool("c2dec", "codec2")
    x8 = resample(np.asarray(wav, dtype=np.float32), sample_rate, 8000)
    pcm = (np.clip(x8, -1, 1) * 32767).astype("<i2")
    with tempfile.TemporaryDirectory() as tmp:
        raw, bit, out = Path(tmp, "in.raw"), Path(tmp, "x.bit"), Path(tmp, "out.raw")
        raw.write_bytes(pcm.tobytes())
        subprocess.run([enc, str(mode), str(raw), str(bit)], check=True, capture_output=True)
        subprocess.run([dec, str(mode), str(bit), str(out)], check=True, capture_output=True)
        y = np.frombuffer(out.read_bytes(), dtype="<i2").astype(np.float32) / 32768
    return resample(y, 8000, sample_rate)


def opus_roundtrip(wav: np.ndarray, sample_rate: int = SAMPLE_RATE, kbps: float = 6.0) -> np.ndarray:
    """Encode and decode with Opus at `kbps` (VBR target, speech tuning); audio at `sample_rate`.

    Args:
        wav: [T] float audio.
        sample_rate: its rate.
        kbps: target bitrate in kbit/s (6 is Opus's lowest).
    """
    enc, dec = _tool("opusenc", "opus-tools"), _tool("opusdec", "opus-tools")
    with tempfile.TemporaryDirectory() as tmp:
        src, opus, out = Path(tmp, "in.wav"), Path(tmp, "x.opus"), Path(tmp, "out.wav")
        sf.write(src, np.asarray(wav, dtype=np.float32), sample_rate, subtype="PCM_16")
        subprocess.run([enc, "--quiet", "--bitrate", str(kbps), "--speech", str(src), str(opus)],
                       check=True, capture_output=True)
        subprocess.run([dec, "--quiet", "--rate", "48000", str(opus), str(out)], check=True, capture_output=True)
        y, rate = sf.read(out, dtype="float32", always_2d=True)
    return resample(y.mean(axis=1), rate, sample_rate)


@torch.no_grad()
def mimi_roundtrip(model: torch.nn.Module, wav: np.ndarray, num_codebooks: int | None = None) -> np.ndarray:
    """Encode and decode 24 kHz audio with a Mimi model, trimmed to the input length.

    Args:
        model: a MimiModel.
        wav: [T] float audio at 24 kHz.
        num_codebooks: K (None: the model's default).
    """
    x = torch.from_numpy(np.asarray(wav, dtype=np.float32)).view(1, 1, -1)
    codes = model.encode(x, num_codebooks)
    return model.decode(codes)[0, 0, : x.shape[-1]].cpu().numpy()


def read_transcripts(path: str | Path) -> dict[str, str]:
    """Transcripts by file stem, from `id|text[|normalized text]` lines (LJSpeech's
    metadata.csv; the last field is used) or `id<TAB>text` lines.

    Raises:
        ValueError: a line has no separator.
    """
    out = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        sep = "|" if "|" in line else "\t"
        parts = line.split(sep)
        if len(parts) < 2:
            raise ValueError(f"transcripts {path}, line {n}: expected 'id|text' or 'id<TAB>text'")
        out[Path(parts[0].strip()).stem] = parts[-1].strip()
    return out


def _words(text: str) -> list[str]:
    return "".join(c.lower() if c.isalnum() or c == "'" else " " for c in text).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word error rate: (substitutions + deletions + insertions) / reference words, after
    lower-casing and removing punctuation.

    Raises:
        ValueError: the reference has no words.
    """
    ref, hyp = _words(reference), _words(hypothesis)
    if not ref:
        raise ValueError("word_error_rate: the reference transcript has no words")
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / len(ref)


def transcribe(wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> str | None:
    """Offline speech recognition with PocketSphinx's bundled US-English model
    (None when the `pocketsphinx` package is not installed).

    Args:
        wav: [T] float audio.
        sample_rate: its rate.
    """
    try:
        from pocketsphinx import Decoder
    except ImportError:
        return None
    x16 = resample(np.asarray(wav, dtype=np.float32), sample_rate, METRIC_RATE)
    pcm = (np.clip(x16, -1, 1) * 32767).astype("<i2").tobytes()
    decoder = Decoder(samprate=METRIC_RATE, loglevel="FATAL")
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return hyp.hypstr if hyp is not None else ""
