"""Vectorised MSB-first bit packing of fixed-width codes (numpy only).

Codes are laid out frame by frame, codebook 0 first within a frame; each code takes
`bits` bits, most significant bit first, and zero bits fill the last byte.
"""

from __future__ import annotations

import numpy as np


def payload_size(num_frames: int, num_codebooks: int, bits: int) -> int:
    """Bytes of payload for `num_frames` frames: ceil(frames * codebooks * bits / 8)."""
    return (num_frames * num_codebooks * bits + 7) // 8


def _shifts(bits: int) -> np.ndarray:
    return np.arange(bits - 1, -1, -1, dtype=np.int64)


def pack_codes(codes: np.ndarray, bits: int) -> bytes:
    """Pack codes into bytes.

    Args:
        codes: [K, F] integers, each in 0 .. 2**bits - 1 (checked by the caller).
        bits: width of one code.

    Returns:
        payload_size(F, K, bits) bytes: frame 0 codebook 0, frame 0 codebook 1, ...
    """
    flat = np.ascontiguousarray(codes.T, dtype=np.int64).reshape(-1)  # frame-major order
    bit_matrix = ((flat[:, None] >> _shifts(bits)) & 1).astype(np.uint8)  # [N, bits], MSB first
    return np.packbits(bit_matrix.reshape(-1)).tobytes()  # packbits pads with zero bits


def unpack_codes(payload: bytes | memoryview, num_frames: int, num_codebooks: int, bits: int) -> np.ndarray:
    """Inverse of `pack_codes`.

    Args:
        payload: at least payload_size(num_frames, num_codebooks, bits) bytes.
        num_frames, num_codebooks, bits: the layout of the packed codes.

    Returns:
        codes: [K, F] int64.
    """
    count = num_frames * num_codebooks
    bit_array = np.unpackbits(np.frombuffer(payload, dtype=np.uint8), count=count * bits)
    weights = np.left_shift(np.int64(1), _shifts(bits))
    values = bit_array.reshape(count, bits).astype(np.int64) @ weights
    return values.reshape(num_frames, num_codebooks).T.copy()

