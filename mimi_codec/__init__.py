"""Mimi neural speech codec: 24 kHz speech <-> 12.5 Hz frames of up to 32 codebook tokens.

    from mimi_codec import load_mimi
    model = load_mimi()                      # official weights from Hugging Face
    model = load_mimi(model="small")         # or a model shipped in the package (mimi_codec.named_models)
    codes = model.encode(wav)                # wav [B, 1, T] float -> codes [B, 8, ceil(T/1920)]
    audio = model.decode(codes)              # -> [B, 1, F * 1920]

The `.mimi` format (`read_mimi`, `write_mimi`, ...), audio I/O and the configs need only numpy;
the names that need torch (the model, loading, checkpoints) are imported on first use, so
reading a `.mimi` header does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .audio import Audio, load_audio, save_audio
from .bitstream import MimiData, MimiFormatError, MimiHeader, MimiReader, MimiWriter, StreamStats, read_mimi, write_mimi
from .config import PRESETS, MimiConfig, QuantizerConfig, SeanetConfig, TransformerConfig

if TYPE_CHECKING:
    from .checkpoint import load_state, official_state_dict, save_mimi
    from .loaders import HF_REPO, MIMI_FILENAME, load_mimi
    from .models.mimi import MimiModel, MimiState

__version__ = "0.1.0"

#: name -> submodule, for the exports that import torch.
_LAZY = {
    "load_state": ".checkpoint",
    "official_state_dict": ".checkpoint",
    "save_mimi": ".checkpoint",
    "HF_REPO": ".loaders",
    "MIMI_FILENAME": ".loaders",
    "load_mimi": ".loaders",
    "MimiModel": ".models.mimi",
    "MimiState": ".models.mimi",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "HF_REPO",
    "MIMI_FILENAME",
    "PRESETS",
    "Audio",
    "MimiConfig",
    "MimiData",
    "MimiFormatError",
    "MimiHeader",
    "MimiModel",
    "MimiReader",
    "MimiState",
    "MimiWriter",
    "QuantizerConfig",
    "SeanetConfig",
    "StreamStats",
    "TransformerConfig",
    "load_audio",
    "load_mimi",
    "load_state",
    "official_state_dict",
    "read_mimi",
    "save_audio",
    "save_mimi",
    "write_mimi",
]
