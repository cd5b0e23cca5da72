"""Mimi neural speech codec: 24 kHz speech <-> 12.5 Hz frames of up to 32 codebook tokens."""

__version__ = "0.1.0"
