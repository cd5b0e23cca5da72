"""The chat wire protocol shared with kyutai's server and clients.

Every websocket message is binary: one kind byte, then the payload.

| kind | name      | payload |
|------|-----------|---------|
| 0x00 | handshake | none (kyutai's Python server), or protocol version u8 + model u8 (its Rust server) |
| 0x01 | audio     | whole Ogg/Opus pages, 24 kHz mono, both directions |
| 0x02 | text      | a UTF-8 text piece (SentencePiece "▁" already turned into a space) |
| 0x03 | control   | one action byte: 0 start, 1 end of turn, 2 pause, 3 restart |
| 0x04 | metadata  | a UTF-8 JSON object |
| 0x05 | error     | a UTF-8 message |
| 0x06 | ping      | anything; our server answers with a ping carrying the same payload |
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any


class Kind(enum.IntEnum):
    """The first byte of every message."""

    HANDSHAKE = 0x00
    AUDIO = 0x01
    TEXT = 0x02
    CONTROL = 0x03
    METADATA = 0x04
    ERROR = 0x05
    PING = 0x06


class ControlAction(enum.IntEnum):
    """Payload byte of a control message (kyutai's web client's values)."""

    START = 0
    END_TURN = 1
    PAUSE = 2
    RESTART = 3


@dataclass(frozen=True)
class Message:
    """One decoded websocket message."""

    kind: Kind  # what the payload is
    payload: bytes  # everything after the kind byte


def encode_message(kind: Kind, payload: bytes = b"") -> bytes:
    """Prefix `payload` with its kind byte.

    Args:
        kind: the message kind.
        payload: the bytes that follow.
    """
    return bytes([int(kind)]) + payload


def decode_message(data: bytes) -> Message:
    """Split a binary websocket message into kind and payload.

    Args:
        data: the message as received.

    Raises:
        ValueError: an empty message or an unknown kind byte.
    """
    if len(data) == 0:
        raise ValueError("empty message: expected a kind byte 0x00..0x06 and a payload")
    try:
        kind = Kind(data[0])
    except ValueError:
        raise ValueError(f"unknown message kind {data[0]:#04x}: expected 0x00..0x06") from None
    return Message(kind, bytes(data[1:]))


def text_message(piece: str) -> bytes:
    """A 0x02 message for a text piece, SentencePiece's "▁" shown as a space.

    Args:
        piece: the token's text.
    """
    return encode_message(Kind.TEXT, piece.replace("\u2581", " ").encode("utf-8"))


def error_message(text: str) -> bytes:
    """A 0x05 message.

    Args:
        text: what went wrong, for a person to read.
    """
    return encode_message(Kind.ERROR, text.encode("utf-8"))


def metadata_message(data: Mapping[str, Any]) -> bytes:
    """A 0x04 message carrying `data` as JSON.

    Args:
        data: a JSON-serialisable mapping.
    """
    return encode_message(Kind.METADATA, json.dumps(dict(data)).encode("utf-8"))


@dataclass(frozen=True)
class Handshake:
    """The server's 0x00 message, in either of the two forms kyutai's servers send."""

    version: int | None  # protocol version byte (Rust server), None for the lone byte
    model: int | None  # model byte (Rust server), None for the lone byte


def parse_handshake(payload: bytes) -> Handshake:
    """Read the payload of a 0x00 message.

    Args:
        payload: b"" (Python server) or version u8 + model u8 (Rust server, maybe more bytes).
    """
    if len(payload) == 0:
        return Handshake(None, None)
    if len(payload) == 1:
        return Handshake(payload[0], None)
    return Handshake(payload[0], payload[1])


@dataclass(frozen=True)
class SamplingSettings:
    """Sampling settings a client may pass in the query string; None keeps the backend's default."""

    text_temperature: float | None = None  # softmax temperature of the text token
    text_topk: int | None = None  # top-k of the text token
    audio_temperature: float | None = None  # softmax temperature of the audio tokens
    audio_topk: int | None = None  # top-k of the audio tokens
    pad_mult: float | None = None  # multiplier on the text padding logit (kyutai's web client option)
    repetition_penalty: float | None = None  # penalty on recently generated text tokens
    repetition_penalty_context: int | None = None  # how many recent text tokens the penalty sees
    text_seed: int | None = None  # seed of the text sampler
    audio_seed: int | None = None  # seed of the audio sampler

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> SamplingSettings:
        """Parse the settings out of a query string; other keys are ignored.

        Args:
            query: the request's query parameters.

        Raises:
            ValueError: a known key whose value is not a number of the right type.
        """
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = query.get(f.name)
            if raw is None or raw == "":
                continue
            want = int if "int" in str(f.type) else float
            try:
                value = want(raw)
            except ValueError:
                raise ValueError(f"query parameter {f.name}={raw!r} is not {'an integer' if want is int else 'a number'}") from None
            if want is float and value != value:
                raise ValueError(f"query parameter {f.name}={raw!r} is not a number")
            values[f.name] = value
        return cls(**values)

    def as_dict(self) -> dict[str, float | int]:
        """The settings that were given, by name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
