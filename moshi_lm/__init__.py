"""Moshi full-duplex speech LM over Mimi codec tokens."""

__version__ = "0.1.0"
