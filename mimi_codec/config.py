"""Frozen configuration dataclasses for Mimi, readable from the official JSON schema.

The official schema is the dict kyutai's loader builds Mimi from::

    {"sample_rate": 24000, "channels": 1, "frame_rate": 12.5,
     "seanet": {...}, "quantizer": {...}, "transformer": {...}}

`MimiConfig.from_dict` accepts exactly those keys (and the optional ones listed on each
dataclass) and rejects anything else, naming the unknown keys.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


def _check_keys(cls: type, data: Mapping[str, Any], where: str) -> None:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; expected a subset of {sorted(known)}")


def _expect(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


@dataclass(frozen=True)
class SeanetConfig:
    """Convolutional SEANet encoder/decoder (the decoder mirrors the encoder)."""

    channels: int = 1  # audio channels (Mimi is mono)
    dimension: int = 512  # latent dimension at the encoder output / decoder input
    causal: bool = True  # causal convolutions (only causal is supported)
    n_filters: int = 64  # width of the first convolution; doubles at each downsampling
    n_residual_layers: int = 1  # residual blocks per resolution
    activation: str = "ELU"  # activation between convolutions (only ELU, alpha 1)
    compress: int = 2  # hidden width of residual blocks = width // compress
    dilation_base: int = 2  # dilation of residual block j is dilation_base ** j
    disable_norm_outer_blocks: int = 0  # blocks without norm (irrelevant with norm "none")
    kernel_size: int = 7  # kernel of the first convolution
    residual_kernel_size: int = 3  # kernel of the first conv of each residual block
    last_kernel_size: int = 3  # kernel of the last convolution
    norm: str = "none"  # convolution normalisation (inference weights are plain: "none")
    pad_mode: str = "constant"  # causal left padding: "constant" (zeros) or "replicate"
    ratios: tuple[int, ...] = (8, 6, 5, 4)  # decoder upsampling ratios (encoder uses them reversed)
    true_skip: bool = True  # identity skip in residual blocks (else a 1x1 conv)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratios", tuple(int(r) for r in self.ratios))
        _expect(self.causal, "seanet.causal: only causal SEANet is supported, got False")
        _expect(self.activation == "ELU", f"seanet.activation: expected 'ELU', got {self.activation!r}")
        _expect(self.norm == "none", f"seanet.norm: expected 'none' (inference weights), got {self.norm!r}")
        _expect(self.pad_mode in ("constant", "replicate"),
                f"seanet.pad_mode: expected 'constant' or 'replicate', got {self.pad_mode!r}")
        _expect(len(self.ratios) > 0 and all(r > 0 for r in self.ratios),
                f"seanet.ratios: expected positive integers, got {list(self.ratios)}")
        _expect(self.compress > 0 and self.n_filters > 0 and self.dimension > 0,
                "seanet: compress, n_filters and dimension must be positive")

    @property
    def hop_length(self) -> int:
        """Audio samples per encoder output step (product of the ratios)."""
        return math.prod(self.ratios)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SeanetConfig":
        """Build from the official `seanet` JSON object; unknown keys raise ValueError."""
        _check_keys(cls, data, "seanet")
        return cls(**dict(data))


@dataclass(frozen=True)
class TransformerConfig:
    """Causal transformer run on the 25 Hz latent, after the encoder and before the decoder."""

    d_model: int = 512  # model width
    num_heads: int = 8  # attention heads
    num_layers: int = 8  # transformer layers
    causal: bool = True  # causal attention (only causal is supported)
    layer_scale: float | None = 0.01  # initial layer-scale value, None disables layer scale
    context: int | None = 250  # attention span in steps (query sees itself and context-1 before)
    conv_layout: bool = True  # inputs/outputs are [B, C, T] (only True is supported)
    max_period: float = 10000  # RoPE maximum period
    gating: str = "none"  # feed-forward gating (only "none": linear-GELU-linear)
    norm: str = "layer_norm"  # normalisation (only "layer_norm", eps 1e-5)
    positional_embedding: str = "rope"  # positions (only interleaved "rope")
    dim_feedforward: int = 2048  # hidden width of the feed-forward block
    input_dimension: int = 512  # width of the input (projected to d_model if different)
    output_dimensions: tuple[int, ...] = (512,)  # width of the single output (projected if different)

    def __post_init__(self) -> None:
        object.__setattr__(self, "output_dimensions", tuple(int(d) for d in self.output_dimensions))
        _expect(self.causal, "transformer.causal: only causal attention is supported, got False")
        _expect(self.conv_layout, "transformer.conv_layout: only True is supported")
        _expect(self.gating == "none", f"transformer.gating: expected 'none', got {self.gating!r}")
        _expect(self.norm == "layer_norm", f"transformer.norm: expected 'layer_norm', got {self.norm!r}")
        _expect(self.positional_embedding == "rope",
                f"transformer.positional_embedding: expected 'rope', got {self.positional_embedding!r}")
        _expect(self.d_model % self.num_heads == 0 and (self.d_model // self.num_heads) % 2 == 0,
                f"transformer: d_model {self.d_model} must split into {self.num_heads} heads of even width")
        _expect(len(self.output_dimensions) == 1,
                f"transformer.output_dimensions: expected one output, got {list(self.output_dimensions)}")
        _expect(self.context is None or self.context > 0,
                f"transformer.context: expected a positive int or null, got {self.context}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TransformerConfig":
        """Build from the official `transformer` JSON object; unknown keys raise ValueError."""
        _check_keys(cls, data, "transformer")
        return cls(**dict(data))


@dataclass(frozen=True)
class QuantizerConfig:
    """Split residual vector quantizer: semantic codebooks then acoustic ones, same input."""

    dimension: int = 256  # codebook vector width
    n_q: int = 32  # total codebooks (semantic + acoustic)
    bins: int = 2048  # entries per codebook
    input_dimension: int = 512  # latent width projected down to `dimension`
    output_dimension: int = 512  # latent width projected back up from `dimension`
    n_q_semantic: int = 1  # codebooks in the semantic (first) quantizer

    def __post_init__(self) -> None:
        _expect(0 < self.n_q_semantic < self.n_q,
                f"quantizer: need 0 < n_q_semantic ({self.n_q_semantic}) < n_q ({self.n_q})")
        _expect(self.bins > 1 and self.dimension > 0, "quantizer: bins must be > 1 and dimension > 0")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "QuantizerConfig":
        """Build from the official `quantizer` JSON object; unknown keys raise ValueError."""
        _check_keys(cls, data, "quantizer")
        return cls(**dict(data))


@dataclass(frozen=True)
class MimiConfig:
    """The whole codec. Defaults are the official Mimi (kyutai/moshiko-pytorch-bf16)."""

    sample_rate: int = 24000  # audio sample rate in Hz
    channels: int = 1  # audio channels
    frame_rate: float = 12.5  # codec frames per second
    seanet: SeanetConfig = field(default_factory=SeanetConfig)  # encoder/decoder convolutions
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)  # split RVQ
    transformer: TransformerConfig = field(default_factory=TransformerConfig)  # both transformers

    def __post_init__(self) -> None:
        _expect(self.channels == self.seanet.channels,
                f"channels {self.channels} differs from seanet.channels {self.seanet.channels}")
        enc_rate = self.sample_rate / self.seanet.hop_length
        stride = enc_rate / self.frame_rate
        _expect(stride >= 1 and stride == int(stride),
                f"frame_rate {self.frame_rate}: the encoder rate {enc_rate} Hz must be an integer "
                "multiple of it")
        _expect(self.sample_rate / self.frame_rate == int(self.sample_rate / self.frame_rate),
                f"sample_rate / frame_rate must be a whole number of samples, got "
                f"{self.sample_rate / self.frame_rate}")
        _expect(self.quantizer.input_dimension == self.seanet.dimension
                and self.quantizer.output_dimension == self.seanet.dimension,
                "quantizer input/output dimensions must equal seanet.dimension")
        _expect(self.transformer.input_dimension == self.seanet.dimension
                and self.transformer.output_dimensions[0] == self.seanet.dimension,
                "transformer input/output dimensions must equal seanet.dimension")

    @property
    def frame_size(self) -> int:
        """Audio samples per codec frame (1920 for Mimi)."""
        return int(self.sample_rate / self.frame_rate)

    @property
    def encoder_frame_rate(self) -> float:
        """Rate of the SEANet latent, before the stride-2 downsampling (25 Hz for Mimi)."""
        return self.sample_rate / self.seanet.hop_length

    @property
    def resample_stride(self) -> int:
        """Ratio between the SEANet latent rate and the codec frame rate (2 for Mimi)."""
        return int(self.encoder_frame_rate / self.frame_rate)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MimiConfig":
        """Build from a dict in the official schema; unknown keys at any level raise ValueError."""
        _check_keys(cls, data, "mimi config")
        kwargs = dict(data)
        kwargs["seanet"] = SeanetConfig.from_dict(data.get("seanet", {}))
        kwargs["quantizer"] = QuantizerConfig.from_dict(data.get("quantizer", {}))
        kwargs["transformer"] = TransformerConfig.from_dict(data.get("transformer", {}))
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-ready dict in the official schema."""
        out = dataclasses.asdict(self)
        out["seanet"]["ratios"] = list(self.seanet.ratios)
        out["transformer"]["output_dimensions"] = list(self.transformer.output_dimensions)
        return out

    @classmethod
    def load(cls, source: "MimiConfig | Mapping[str, Any] | str | Path | None") -> "MimiConfig":
        """Resolve a config given as None (official), an object, a dict, a preset name or a JSON path.

        Args:
            source: None for the official config; a MimiConfig; a dict in the official schema;
                a key of PRESETS; or the path of a JSON file holding such a dict.
        """
        if source is None:
            return PRESETS["mimi"]
        if isinstance(source, MimiConfig):
            return source
        if isinstance(source, Mapping):
            return cls.from_dict(source)
        if isinstance(source, str) and source in PRESETS:
            return PRESETS[source]
        if isinstance(source, (str, Path)):
            path = Path(source)
            if not path.is_file():
                raise ValueError(f"config {str(source)!r} is neither a preset {sorted(PRESETS)} "
                                 "nor an existing JSON file")
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ValueError(f"config file {path}: invalid JSON ({exc})") from exc
            return cls.from_dict(data)
        raise ValueError(f"config: expected None, MimiConfig, dict or path, got {type(source).__name__}")


PRESETS: dict[str, MimiConfig] = {
    # The released Mimi of kyutai/moshiko-pytorch-bf16 (tokenizer-e351c8d8-checkpoint125).
    "mimi": MimiConfig(),
}
