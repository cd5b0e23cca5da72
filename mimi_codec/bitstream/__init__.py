"""The `.mimi` bitstream, version 1: read and write Mimi codes (numpy only, no torch).

Whole streams::

    write_mimi("talk.mimi", codes, model="...", num_samples=240000)   # codes [K, F]
    data = read_mimi("talk.mimi")       # data.codes [K, F] int64, data.header, data.stats

Streams over a pipe or socket: `MimiWriter` sends a packet every 25 frames, `MimiReader`
yields each packet's codes as it arrives. The byte format is spelled out in docs/format.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from .header import MAGIC, VERSION, MimiFormatError, MimiHeader
from .stream import (
    DEFAULT_FRAMES_PER_PACKET,
    END_PACKET,
    PACKET_OVERHEAD,
    MimiReader,
    MimiWriter,
    StreamStats,
    as_code_array,
)

__all__ = [
    "DEFAULT_FRAMES_PER_PACKET",
    "END_PACKET",
    "MAGIC",
    "PACKET_OVERHEAD",
    "VERSION",
    "MimiData",
    "MimiFormatError",
    "MimiHeader",
    "MimiReader",
    "MimiWriter",
    "StreamStats",
    "read_mimi",
    "write_mimi",
]

PathOrFile = str | os.PathLike[str] | BinaryIO


@dataclass(frozen=True)
class MimiData:
    """Everything read from a `.mimi` stream.

    Attributes:
        codes: [K, F] int64, every intact frame (all of them when `error` is None).
        header: the stream header.
        stats: bytes of header, payload and framing; packet count.
        error: the damage found when reading with `salvage=True`; None for an intact stream.
    """

    codes: np.ndarray  # [K, F] int64
    header: MimiHeader  # the JSON header
    stats: StreamStats  # byte accounting
    error: MimiFormatError | None  # damage found in salvage mode, None if intact

    @property
    def intact(self) -> bool:
        """True when the whole stream, end packet included, checked out."""
        return self.error is None

    @property
    def num_frames(self) -> int:
        """Frames of codes read."""
        return int(self.codes.shape[1])


def _source_name(target: Any) -> str:
    if isinstance(target, (str, os.PathLike)):
        return os.fspath(target)
    return str(getattr(target, "name", "") or "")


def read_mimi(source: PathOrFile, salvage: bool = False) -> MimiData:
    """Read a whole `.mimi` stream and check every packet.

    Args:
        source: a path, or a binary file object read to its end.
        salvage: return every frame before the first damage (with `.error` set) instead of raising.

    Returns:
        MimiData with codes [K, F] int64.

    Raises:
        MimiFormatError: bad magic, unknown version or bad header (always); CRC mismatch,
            missing end packet, bytes after the end packet, or a frame count that disagrees
            with `num_samples` (unless `salvage`).
        OSError: the file cannot be opened.
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            return _read(f, salvage, os.fspath(source))
    return _read(source, salvage, _source_name(source))


def _read(file: BinaryIO, salvage: bool, name: str) -> MimiData:
    reader = MimiReader(file, salvage=salvage, source=name)
    codes = reader.read_all()
    reader.check_end()
    return MimiData(codes=codes, header=reader.header, stats=reader.stats, error=reader.error)


def write_mimi(
    target: PathOrFile,
    codes: Any,
    *,
    model: str,
    num_samples: int | None = None,
    sample_rate: int = 24000,
    frame_rate: float = 12.5,
    codebook_bits: int = 11,
    frames_per_packet: int = DEFAULT_FRAMES_PER_PACKET,
    extra: dict[str, Any] | None = None,
) -> int:
    """Write codes as a complete `.mimi` stream (header, packets, end packet).

    Args:
        target: a path (created or overwritten) or a binary file object (not closed).
        codes: [K, F] or [1, K, F] integer codes (numpy array or torch tensor), K in 1..32.
        model: which weights made the codes.
        num_samples: samples to keep after decoding; must need exactly F frames. None: unknown.
        sample_rate, frame_rate, codebook_bits: the codec's geometry (Mimi: 24000, 12.5, 11).
        frames_per_packet: frames per packet, 1..255.
        extra: additional header keys.

    Returns:
        bytes written.
    """
    arr = as_code_array(codes, bits=codebook_bits)
    header = MimiHeader(
        num_codebooks=int(arr.shape[0]),
        model=model,
        num_samples=num_samples,
        sample_rate=sample_rate,
        frame_rate=frame_rate,
        codebook_bits=codebook_bits,
        extra=dict(extra or {}),
    )
    expected = header.expected_frames
    if expected is not None and expected != arr.shape[1]:
        raise ValueError(f"num_samples {num_samples} needs {expected} frames, codes have {arr.shape[1]}")
    if isinstance(target, (str, os.PathLike)):
        with open(target, "wb") as f:
            return _write(f, header, arr, frames_per_packet)
    return _write(target, header, arr, frames_per_packet)


def _write(file: BinaryIO, header: MimiHeader, codes: np.ndarray, frames_per_packet: int) -> int:
    writer = MimiWriter(file, header, frames_per_packet=frames_per_packet)
    writer.write(codes)
    writer.close()
    return writer.bytes_written
