"""Mimi neural speech codec: 24 kHz speech <-> 12.5 Hz frames of up to 32 codebook tokens.

    from mimi_codec import load_mimi
    model = load_mimi()                      # official weights from Hugging Face
    codes = model.encode(wav)                # wav [B, 1, T] float -> codes [B, 8, ceil(T/1920)]
    audio = model.decode(codes)              # -> [B, 1, F * 1920]
"""

from .bitstream import MimiFormatError, MimiReader, MimiWriter, read_mimi, write_mimi
from .checkpoint import load_state, official_state_dict, save_mimi
from .config import PRESETS, MimiConfig, QuantizerConfig, SeanetConfig, TransformerConfig
from .loaders import HF_REPO, MIMI_FILENAME, load_mimi
from .models.mimi import MimiModel, MimiState

__version__ = "0.1.0"

__all__ = [
    "HF_REPO",
    "MIMI_FILENAME",
    "PRESETS",
    "MimiConfig",
    "MimiFormatError",
    "MimiModel",
    "MimiReader",
    "MimiState",
    "MimiWriter",
    "QuantizerConfig",
    "SeanetConfig",
    "TransformerConfig",
    "load_mimi",
    "load_state",
    "official_state_dict",
    "read_mimi",
    "save_mimi",
    "write_mimi",
]
