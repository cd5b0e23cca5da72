"""The `.mimi` stream header and the format's one error type.

A stream starts with the 4-byte magic ``MIMI``, a version byte (1), a big-endian u16 length
and that many bytes of UTF-8 JSON describing the codes that follow (see docs/format.md).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

#: First four bytes of every `.mimi` stream.
MAGIC = b"MIMI"
#: The format version this module reads and writes.
VERSION = 1
#: Bytes before the JSON: magic, version u8, JSON length u16 big-endian.
PREFIX = struct.Struct(">4sBH")
#: Largest JSON header the u16 length field can describe.
MAX_HEADER_JSON = 0xFFFF
#: Widest code the format allows (codes are unpacked into int64).
MAX_CODEBOOK_BITS = 32
#: Most codebooks a stream may carry.
MAX_CODEBOOKS = 32

_KNOWN_KEYS = ("sample_rate", "frame_rate", "num_codebooks", "codebook_bits", "num_samples", "model")


class MimiFormatError(ValueError):
    """A `.mimi` stream that is not valid version 1: names the byte offset and what was wrong.

    Attributes:
        offset: byte offset in the stream where the problem was found.
        reason: what was wrong, without the offset.
        source: name of the file or stream, when known ("" otherwise).
    """

    def __init__(self, reason: str, offset: int, source: str = "") -> None:
        self.reason = reason
        self.offset = offset
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{reason} (at byte {offset})")

    def with_source(self, source: str) -> MimiFormatError:
        """Return the same error naming `source` (the file it came from)."""
        return MimiFormatError(self.reason, self.offset, source)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-finite number {name} is not valid JSON")


@dataclass(frozen=True)
class MimiHeader:
    """What a `.mimi` stream says about its codes (the JSON header).

    Attributes:
        num_codebooks: codebooks per frame, 1..32.
        model: which weights made the codes (e.g. "kyutai/moshiko-pytorch-bf16:tokenizer-...").
        num_samples: samples at `sample_rate` to keep after decoding; None for a live stream.
        sample_rate: audio samples per second the codes describe (24000 for Mimi).
        frame_rate: frames per second (12.5 for Mimi).
        codebook_bits: width of one code in bits (11 for 2048-entry codebooks).
        extra: any other header keys, kept as read (readers ignore keys they don't know).
    """

    num_codebooks: int  # codebooks per frame, 1..32
    model: str  # identifier of the weights that made the codes
    num_samples: int | None = None  # samples to keep after decoding; None = unknown/live
    sample_rate: int = 24000  # audio samples per second
    frame_rate: float = 12.5  # frames per second
    codebook_bits: int = 11  # bits per code
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys, preserved

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem is not None:
            raise ValueError(problem)

    def _problem(self) -> str | None:
        if not _is_int(self.num_codebooks) or not 1 <= self.num_codebooks <= MAX_CODEBOOKS:
            return f"num_codebooks {self.num_codebooks!r} is not an integer in 1..{MAX_CODEBOOKS}"
        if not isinstance(self.model, str):
            return f"model {self.model!r} is not a string"
        if self.num_samples is not None and (not _is_int(self.num_samples) or self.num_samples < 0):
            return f"num_samples {self.num_samples!r} is not null or an integer >= 0"
        if not _is_int(self.sample_rate) or self.sample_rate <= 0:
            return f"sample_rate {self.sample_rate!r} is not a positive integer"
        fr = self.frame_rate
        if not isinstance(fr, (int, float)) or isinstance(fr, bool) or not math.isfinite(fr) or fr <= 0:
            return f"frame_rate {self.frame_rate!r} is not a positive number"
        if not _is_int(self.codebook_bits) or not 1 <= self.codebook_bits <= MAX_CODEBOOK_BITS:
            return f"codebook_bits {self.codebook_bits!r} is not an integer in 1..{MAX_CODEBOOK_BITS}"
        if not isinstance(self.extra, dict) or any(k in self.extra for k in _KNOWN_KEYS):
            return "extra must be a dict of keys other than the standard header keys"
        return None

    @property
    def frame_size(self) -> Fraction:
        """Audio samples per frame (1920 for Mimi), exact."""
        return Fraction(self.sample_rate) / Fraction(self.frame_rate)

    @property
    def frame_bits(self) -> int:
        """Bits of codes in one frame."""
        return self.num_codebooks * self.codebook_bits

    @property
    def bitrate(self) -> float:
        """Bits per second of codes (1100.0 at 8 codebooks of 11 bits, 12.5 Hz)."""
        return self.frame_bits * self.frame_rate

    @property
    def expected_frames(self) -> int | None:
        """Frames needed to cover `num_samples` (None when the length is unknown)."""
        if self.num_samples is None:
            return None
        return math.ceil(Fraction(self.num_samples) / self.frame_size)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to the stream (standard keys first, then `extra`)."""
        d: dict[str, Any] = {
            "sample_rate": self.sample_rate,
            "frame_rate": self.frame_rate,
            "num_codebooks": self.num_codebooks,
            "codebook_bits": self.codebook_bits,
            "num_samples": self.num_samples,
            "model": self.model,
        }
        d.update(self.extra)
        return d

    def to_bytes(self) -> bytes:
        """Magic, version, JSON length and JSON: everything before the first packet.

        Raises:
            ValueError: the JSON is longer than 65535 bytes or `extra` is not JSON-serialisable.
        """
        try:
            text = json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"header is not serialisable as JSON: {e}") from None
        blob = text.encode("utf-8")
        if len(blob) > MAX_HEADER_JSON:
            raise ValueError(f"header JSON is {len(blob)} bytes, more than the {MAX_HEADER_JSON} the format allows")
        return PREFIX.pack(MAGIC, VERSION, len(blob)) + blob

    @classmethod
    def from_json(cls, blob: bytes, offset: int = PREFIX.size) -> MimiHeader:
        """Parse the JSON part of a header.

        Args:
            blob: the `hlen` bytes of UTF-8 JSON.
            offset: byte offset of `blob` in the stream, for error messages.

        Raises:
            MimiFormatError: not UTF-8, not a JSON object, or a missing/invalid standard key.
        """
        try:
            obj = json.loads(blob.decode("utf-8"), parse_constant=_reject_constant)
        except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise MimiFormatError(f"bad header: not UTF-8 JSON ({type(e).__name__}: {e})", offset) from None
        if not isinstance(obj, dict):
            raise MimiFormatError(f"bad header: JSON is a {type(obj).__name__}, expected an object", offset)
        missing = [k for k in _KNOWN_KEYS if k not in obj]
        if missing:
            raise MimiFormatError(f"bad header: missing key(s) {', '.join(missing)}", offset)
        extra = {k: v for k, v in obj.items() if k not in _KNOWN_KEYS}
        try:
            return cls(
                num_codebooks=obj["num_codebooks"],
                model=obj["model"],
                num_samples=obj["num_samples"],
                sample_rate=obj["sample_rate"],
                frame_rate=obj["frame_rate"],
                codebook_bits=obj["codebook_bits"],
                extra=extra,
            )
        except ValueError as e:
            raise MimiFormatError(f"bad header: {e}", offset) from None
