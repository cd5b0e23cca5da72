"""Frozen configuration of a Mimi training run, read from a JSON file.

A training config names the model (a preset, a config JSON or an inline dict in the official
schema), optionally weights to start from (fine-tuning), and the recipe: data, quantizer
training, losses, optimiser, checkpoints. `TrainConfig.from_dict` rejects unknown keys at
every level, naming them, so a typo in a JSON file is an error and not a silent default.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..config import _check_keys, _expect




@dataclass(frozen=True)
class DataConfig:
    """Random training segments and their augmentation."""

    segment_seconds: float = 2.4  # segment length (rounded down to whole 1920-sample frames)
    batch_size: int = 8  # segments per step
    loudness_db: float = -24.0  # RMS level segments are normalised to, in dBFS
    gain_db: float = 6.0  # random gain of +-gain_db after normalisation
    noise_prob: float = 0.3  # share of segments with added white/pink noise
    noise_snr_db: tuple[float, float] = (15.0, 40.0)  # range of the noise's signal-to-noise ratio
    eq_prob: float = 0.3  # share of segments with a random EQ curve
    eq_db: float = 6.0  # largest boost/cut of the EQ curve
    reverb_prob: float = 0.2  # share of segments with synthetic room reverb
    reverb_rt60: tuple[float, float] = (0.1, 0.5)  # range of the reverb's decay time in seconds

    def __post_init__(self) -> None:
        object.__setattr__(self, "noise_snr_db", tuple(float(v) for v in self.noise_snr_db))
        object.__setattr__(self, "reverb_rt60", tuple(float(v) for v in self.reverb_rt60))
        _expect(self.segment_seconds > 0, f"data.segment_seconds {self.segment_seconds}: expected > 0")
        _expect(self.batch_size >= 1, f"data.batch_size {self.batch_size}: expected >= 1")
        for name in ("noise_prob", "eq_prob", "reverb_prob"):
            v = getattr(self, name)
            _expect(0.0 <= v <= 1.0, f"data.{name} {v}: expected a probability in 0..1")
        for name in ("noise_snr_db", "reverb_rt60"):
            v = getattr(self, name)
            _expect(len(v) == 2 and v[0] <= v[1], f"data.{name} {list(v)}: expected [low, high]")


@dataclass(frozen=True)
class QuantizerTrainConfig:
    """How the split RVQ learns: EMA codebooks, commitment, dropout, skipped quantization."""

    decay: float = 0.99  # EMA decay of embedding_sum and cluster_usage
    kmeans_iters: int = 10  # k-means iterations of the first-batch initialisation
    dead_threshold: float = 0.1  # a code is dead when its usage < this x the mean usage per code
    dead_check_every: int = 5  # steps between dead-code replacements
    commitment_weight: float = 1.0  # weight of || x - sg(q) ||^2 in the loss
    quantizer_dropout: bool = True  # draw the number of acoustic codebooks per batch
    skip_quantization: float = 0.5  # share of batch items decoded from the unquantized latent
    num_codebooks: int = 8  # codebooks trained (the rest of the quantizer is left untouched)

    def __post_init__(self) -> None:
        _expect(0.0 < self.decay < 1.0, f"quantizer.decay {self.decay}: expected 0 < decay < 1")
        _expect(0.0 <= self.skip_quantization < 1.0,
                f"quantizer.skip_quantization {self.skip_quantization}: expected 0 <= share < 1")
        _expect(self.dead_check_every >= 1, "quantizer.dead_check_every: expected >= 1")
        _expect(self.num_codebooks >= 1, f"quantizer.num_codebooks {self.num_codebooks}: expected >= 1")


@dataclass(frozen=True)
class LossConfig:
    """Loss weights (relative shares of the gradient when the balancer is on)."""

    mel: float = 1.0  # multi-scale mel-spectrogram L1
    mel_linear: float = 1.0  # weight of the mel-power L1 next to the log-mel L1 inside the mel loss
    waveform: float = 0.1  # waveform L1
    adversarial: float = 3.0  # generator hinge loss against the MS-STFT discriminator
    feature: float = 3.0  # discriminator feature matching
    balancer: bool = True  # scale each loss's gradient on the output by its weight / its norm
    adversarial_start: int = 0  # step at which the discriminator joins
    disc_filters: int = 32  # channels of the MS-STFT discriminator
    disc_ffts: tuple[int, ...] = (2048, 1024, 512)  # FFT sizes of its scales
    mel_ffts: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)  # FFT sizes of the mel loss
    semantic: float = 0.0  # weight of the semantic distillation cosine loss (0: off)

    def __post_init__(self) -> None:
        object.__setattr__(self, "disc_ffts", tuple(int(v) for v in self.disc_ffts))
        object.__setattr__(self, "mel_ffts", tuple(int(v) for v in self.mel_ffts))
        for name in ("mel", "waveform", "adversarial", "feature", "semantic"):
            _expect(getattr(self, name) >= 0, f"loss.{name} {getattr(self, name)}: expected >= 0")
        _expect(self.mel + self.waveform > 0, "loss: mel or waveform must have a positive weight")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW for generator and discriminator, and the EMA of the weights."""

    lr: float = 3e-4  # generator learning rate
    disc_lr: float = 3e-4  # discriminator learning rate
    betas: tuple[float, float] = (0.5, 0.9)  # Adam betas (Moshi paper)
    weight_decay: float = 5e-2  # applied to transformer weight matrices only
    grad_clip: float = 0.0  # max gradient norm (0: no clipping)
    warmup_steps: int = 0  # linear learning-rate warm-up
    ema_decay: float = 0.99  # decay of the weights' EMA (the EMA is what gets exported)

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        _expect(self.lr > 0 and self.disc_lr > 0, "optim: learning rates must be > 0")
        _expect(len(self.betas) == 2, f"optim.betas {list(self.betas)}: expected two values")
        _expect(0.0 <= self.ema_decay < 1.0, f"optim.ema_decay {self.ema_decay}: expected 0 <= d < 1")


@dataclass(frozen=True)
class TrainConfig:
    """A whole training (or fine-tuning) run."""

    model: str | dict = "mimi"  # preset name, path of a config JSON, or an official-schema dict
    init_weights: str | None = None  # safetensors to start from (fine-tuning); None: random init
    steps: int = 1000  # optimiser steps in total
    seed: int = 0  # seeds the init, the data and every random choice (by step)
    log_every: int = 10  # steps between metrics lines
    checkpoint_every: int = 200  # steps between checkpoints
    checkpoint_minutes: float = 0.0  # also checkpoint after this many minutes (0: off)
    snapshots: bool = False  # also keep the exported model of every checkpoint (snapshots/)
    export_ema: bool = True  # export the EMA of the weights (False: the raw weights)
    data: DataConfig = field(default_factory=DataConfig)  # segments and augmentation
    quantizer: QuantizerTrainConfig = field(default_factory=QuantizerTrainConfig)  # RVQ training
    loss: LossConfig = field(default_factory=LossConfig)  # losses and discriminator
    optim: OptimConfig = field(default_factory=OptimConfig)  # optimisers and EMA

    def __post_init__(self) -> None:
        _expect(self.steps >= 1, f"steps {self.steps}: expected >= 1")
        _expect(self.log_every >= 1 and self.checkpoint_every >= 1,
                "log_every and checkpoint_every must be >= 1")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        """Build from a dict (a parsed JSON file); unknown keys at any level raise ValueError."""
        _check_keys(cls, data, "train config")
        kw = dict(data)
        subs = {"data": DataConfig, "quantizer": QuantizerTrainConfig, "loss": LossConfig,
                "optim": OptimConfig}
        for key, sub in subs.items():
            if key in kw:
                _check_keys(sub, kw[key], key)
                kw[key] = sub(**dict(kw[key]))
        return cls(**kw)

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        """Read a training config JSON file; relative `model` (.json) and `init_weights`
        (.safetensors) paths in it are taken relative to the file's folder."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"training config {str(path)!r} does not exist")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"training config {path}: invalid JSON ({exc})") from exc
        if isinstance(data, dict):  # relative paths in the file are relative to the file
            for key in ("model", "init_weights"):
                val = data.get(key)
                if isinstance(val, str) and val.endswith((".json", ".safetensors")) and not Path(val).is_absolute():
                    data[key] = str(path.parent / val)
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict that `from_dict` reads back to an equal config."""
        return json.loads(json.dumps(dataclasses.asdict(self)))
