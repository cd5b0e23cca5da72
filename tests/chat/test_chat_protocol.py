"""Unit tests of the wire format: kind bytes, handshakes, settings, Ogg page checks, Opus, URLs."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from mimi_moshi_chat.client import chat_url, frame_latencies
from mimi_moshi_chat.ogg import ogg_crc, split_pages
from mimi_moshi_chat.opus import OpusDecoder, OpusEncoder
from mimi_moshi_chat.protocol import (
    Handshake, Kind, SamplingSettings, decode_message, encode_message, error_message, parse_handshake, text_message,
)


def test_message_round_trip_and_kinds():
    assert [int(k) for k in Kind] == [0, 1, 2, 3, 4, 5, 6]
    m = decode_message(encode_message(Kind.AUDIO, b"OggS..."))
    assert m.kind == Kind.AUDIO and m.payload == b"OggS..."
    assert text_message("\u2581hello") == b"\x02 hello"
    assert error_message("busy") == b"\x05busy"
    with pytest.raises(ValueError, match="empty message"):
        decode_message(b"")
    with pytest.raises(ValueError, match="unknown message kind 0x07"):
        decode_message(b"\x07abc")


def test_handshake_both_forms():
    assert parse_handshake(b"") == Handshake(None, None)  # kyutai's Python server: the lone 0x00
    assert parse_handshake(b"\x00\x01") == Handshake(0, 1)  # its Rust server: version, model


def test_sampling_settings_from_query():
    s = SamplingSettings.from_query({"text_temperature": "0.5", "text_topk": "10", "audio_seed": "7",
                                     "email": "ignored@example.com", "pad_mult": ""})
    assert s.text_temperature == 0.5 and s.text_topk == 10 and s.audio_seed == 7 and s.pad_mult is None
    assert s.as_dict() == {"text_temperature": 0.5, "text_topk": 10, "audio_seed": 7}
    with pytest.raises(ValueError, match="text_topk='ten' is not an integer"):
        SamplingSettings.from_query({"text_topk": "ten"})
    with pytest.raises(ValueError, match="audio_temperature='hot' is not a number"):
        SamplingSettings.from_query({"audio_temperature": "hot"})


def test_ogg_crc_known_value_and_real_pages():
    # The Ogg CRC is CRC-32/CKSUM (polynomial 0x04C11DB7, init 0, not reflected) without its
    # final inversion: the catalogued check value 0x765E7680 of b"123456789", inverted.
    assert ogg_crc(b"123456789") == 0x765E7680 ^ 0xFFFFFFFF
    assert ogg_crc(b"123456789") != zlib.crc32(b"123456789")
    enc = OpusEncoder()
    data = b"".join(enc.encode(np.sin(np.arange(1920) / 7).astype(np.float32) * 0.3) for _ in range(3))
    pages = split_pages(data)
    assert len(pages) >= 4 and pages[0].header_type == 2  # beginning-of-stream page first
    assert [p.sequence for p in pages] == list(range(len(pages)))
    assert b"".join(p.data for p in pages) == data
    assert pages[-1].granule_position == 3 * 1920 * 2  # granule counts 48 kHz samples


@pytest.mark.parametrize("corrupt, message", [
    (lambda d: b"garbage" + d, "not an Ogg page at byte 0"),
    (lambda d: d[:-5], "truncated Ogg page"),
    (lambda d: d[:20], "truncated Ogg page header"),
    (lambda d: d[:4] + b"\x01" + d[5:], "structure version 1"),
    (lambda d: d[:60] + bytes([d[60] ^ 0x10]) + d[61:], "checksum"),
])
def test_split_pages_rejects(corrupt, message):
    data = OpusEncoder().encode(np.zeros(1920, dtype=np.float32))
    with pytest.raises(ValueError, match=message):
        split_pages(corrupt(data))


def test_opus_decoder_survives_bad_messages():
    enc, dec = OpusEncoder(), OpusDecoder()
    t = np.arange(1920 * 4)
    pcm = (0.3 * np.sin(2 * np.pi * 440 * t / 24000)).astype(np.float32)
    out = [dec.decode(enc.encode(pcm[:1920]))]
    for bad in (b"garbage", b"OggS" + bytes(100), b"OggS\x00\x00" + b"\xff" * 40):
        with pytest.raises(ValueError):
            dec.decode(bad)
    out += [dec.decode(enc.encode(pcm[k * 1920:(k + 1) * 1920])) for k in range(1, 4)]
    assert [len(o) for o in out] == [1920] * 4
    got = np.concatenate(out)
    # Opus is lossy but a 440 Hz tone survives: compare after its (constant) delay.
    lag = int(np.argmax(np.correlate(got[1920:4800], pcm[1920:2880], mode="valid")))
    ref = pcm[1920 - lag if lag <= 1920 else 0:][: 4000]
    seg = got[1920:1920 + len(ref)]
    assert np.corrcoef(seg, ref)[0, 1] > 0.99


def test_chat_url():
    assert chat_url("127.0.0.1:8998") == "ws://127.0.0.1:8998/api/chat"
    assert chat_url("https://host:1") == "wss://host:1/api/chat"
    assert chat_url("ws://h:2/api/chat?x=1", SamplingSettings(text_topk=3)) == "ws://h:2/api/chat?x=1&text_topk=3"
    with pytest.raises(ValueError, match="scheme 'ftp'"):
        chat_url("ftp://h:1")


def test_frame_latencies():
    sent = [0.0, 0.08, 0.16]
    got = [(0.05, 1920), (0.20, 3840 + 1920)]
    np.testing.assert_allclose(frame_latencies(sent, got), [50.0, 120.0, 40.0])
