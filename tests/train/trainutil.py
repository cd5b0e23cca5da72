"""A tiny codec and training config for the training tests (a few seconds per run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

TINY_MODEL: dict[str, Any] = {
    "sample_rate": 24000, "channels": 1, "frame_rate": 12.5,
    "seanet": {"dimension": 32, "n_filters": 4, "ratios": [8, 6, 5, 4]},
    "quantizer": {"dimension": 8, "n_q": 4, "bins": 32, "input_dimension": 32, "output_dimension": 32},
    "transformer": {"d_model": 32, "num_heads": 2, "num_layers": 1, "dim_feedforward": 64,
                    "input_dimension": 32, "output_dimensions": [32]},
}


def tiny_train_config(**over: Any) -> dict[str, Any]:
    """A training config dict for TINY_MODEL; keyword arguments replace top-level keys."""
    cfg: dict[str, Any] = {
        "model": TINY_MODEL, "steps": 30, "seed": 3, "log_every": 5, "checkpoint_every": 1000,
        "data": {"segment_seconds": 0.32, "batch_size": 4, "noise_prob": 0.0, "eq_prob": 0.0,
                 "reverb_prob": 0.0, "gain_db": 0.0},
        "quantizer": {"num_codebooks": 4, "dead_check_every": 1, "dead_threshold": 0.95},
        "loss": {"adversarial": 0.0, "feature": 0.0, "mel_ffts": [64, 128, 256]},
        "optim": {"lr": 3e-3},
    }
    cfg.update(over)
    return cfg


def write_tone_data(folder: Path, seconds: float = 3.0) -> Path:
    """Write two short synthetic voiced signals (harmonic tones with vibrato) at 16 kHz."""
    folder.mkdir(parents=True, exist_ok=True)
    sr = 16000
    t = np.arange(int(seconds * sr)) / sr
    for i, f0 in enumerate((110.0, 190.0)):
        phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))) / sr
        x = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.5 + 0.5 * np.sin(2 * np.pi * 1.5 * t) ** 2)
        sf.write(folder / f"tone{i}.wav", (0.2 * x).astype(np.float32), sr)
    return folder
