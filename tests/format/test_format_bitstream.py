"""Library-level tests of the .mimi v1 format: layout, round trips, streaming, every error."""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import threading
import zlib

import numpy as np
import pytest

from mimi_codec.bitstream import (
    END_PACKET,
    MimiFormatError,
    MimiHeader,
    MimiReader,
    MimiWriter,
    read_mimi,
    write_mimi,
)
from mimi_codec.bitstream.packing import pack_codes, unpack_codes


def _codes(k: int, f: int, seed: int = 0, bits: int = 11) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1 << bits, size=(k, f), dtype=np.int64)


def _blob(codes: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    write_mimi(buf, codes, model=kw.pop("model", "test-model"), **kw)
    return buf.getvalue()


def test_packing_is_msb_first_codebook0_first_zero_filled() -> None:
    # frame 0: codes 1 and 2047 -> 00000000001 11111111111 + 2 fill bits 00
    assert pack_codes(np.array([[1], [2047]]), 11) == bytes([0x00, 0x3F, 0xFC])
    # two frames of one 3-bit codebook: 101 011 + 00 -> 0b10101100
    assert pack_codes(np.array([[5, 3]]), 3) == bytes([0b10101100])
    # frame-major: frame 0 (codebooks 0,1) before frame 1
    packed = pack_codes(np.array([[1, 2], [3, 4]]), 4)  # frame0: 1,3  frame1: 2,4
    assert packed == bytes([0x13, 0x24])


@pytest.mark.parametrize("bits", [1, 7, 8, 11, 16, 31, 32])
def test_pack_unpack_inverse(bits: int) -> None:
    codes = _codes(5, 37, seed=bits, bits=bits)
    codes[0, 0], codes[1, 1] = 0, (1 << bits) - 1
    packed = pack_codes(codes, bits)
    assert len(packed) == (5 * 37 * bits + 7) // 8
    np.testing.assert_array_equal(unpack_codes(packed, 37, 5, bits), codes)


@pytest.mark.parametrize("k", range(1, 33))
def test_every_codebook_count_round_trips(k: int) -> None:
    codes = _codes(k, 61, seed=k)
    codes[:, 0] = 2047
    codes[:, 1] = 0
    blob = _blob(codes, num_samples=61 * 1920 - 7)
    data = read_mimi(io.BytesIO(blob))
    assert data.intact and data.header.num_codebooks == k
    np.testing.assert_array_equal(data.codes, codes)
    assert data.codes.dtype == np.int64
    assert data.stats.num_packets == 3 and data.stats.max_packet_frames == 25
    assert data.stats.total_bytes == len(blob)


def test_exact_byte_layout() -> None:
    codes = _codes(8, 30)
    blob = _blob(codes, num_samples=57000, extra={"note": "é"})
    magic, version, hlen = struct.unpack(">4sBH", blob[:7])
    assert (magic, version) == (b"MIMI", 1)
    header = json.loads(blob[7 : 7 + hlen].decode("utf-8"))
    assert header == {
        "sample_rate": 24000,
        "frame_rate": 12.5,
        "num_codebooks": 8,
        "codebook_bits": 11,
        "num_samples": 57000,
        "model": "test-model",
        "note": "é",
    }
    pos = 7 + hlen
    # packet 1: 25 frames -> 25*8*11/8 = 275 bytes
    assert blob[pos] == 25
    payload = blob[pos + 1 : pos + 276]
    assert payload == pack_codes(codes[:, :25], 11)
    assert blob[pos + 276 : pos + 280] == zlib.crc32(blob[pos : pos + 276]).to_bytes(4, "big")
    pos += 280
    # packet 2: 5 frames -> 55 bytes
    assert blob[pos] == 5 and blob[pos + 1 : pos + 56] == pack_codes(codes[:, 25:], 11)
    pos += 60
    assert blob[pos:] == b"\x00" + zlib.crc32(b"\x00").to_bytes(4, "big") == END_PACKET
    assert END_PACKET.hex() == "00d202ef8d"


def test_8_codebooks_is_1100_bits_per_second_and_under_3_percent_overhead() -> None:
    codes = _codes(8, 125)  # 10 s at 12.5 Hz
    data = read_mimi(io.BytesIO(_blob(codes, num_samples=240000)))
    assert data.header.bitrate == 1100.0
    assert data.stats.payload_bytes * 8 / 10.0 == 1100.0
    assert data.stats.framing_bytes == 5 * 5 + 5
    assert data.stats.overhead == pytest.approx(30 / 1375)
    assert data.stats.overhead <= 0.03


def test_unknown_header_keys_are_kept_and_ignored() -> None:
    blob = _blob(_codes(2, 3), extra={"future": {"x": [1, 2]}, "speaker": "p240"})
    data = read_mimi(io.BytesIO(blob))
    assert data.header.extra == {"future": {"x": [1, 2]}, "speaker": "p240"}
    assert data.header.num_samples is None


def test_torch_tensor_and_batch_of_one_accepted() -> None:
    torch = pytest.importorskip("torch")
    codes = _codes(4, 10)
    blob = _blob(torch.from_numpy(codes)[None])
    np.testing.assert_array_equal(read_mimi(io.BytesIO(blob)).codes, codes)


def test_path_round_trip(tmp_path) -> None:
    codes = _codes(3, 40)
    n = write_mimi(tmp_path / "a.mimi", codes, model="m", num_samples=40 * 1920)
    assert os.path.getsize(tmp_path / "a.mimi") == n
    np.testing.assert_array_equal(read_mimi(tmp_path / "a.mimi").codes, codes)
    np.testing.assert_array_equal(read_mimi(str(tmp_path / "a.mimi")).codes, codes)


@pytest.mark.parametrize(
    ("codes", "kw", "match"),
    [
        (np.zeros((8,)), {}, r"shape \(8,\)"),
        (np.zeros((2, 8, 3), dtype=np.int64), {}, r"shape \(2, 8, 3\)"),
        (np.zeros((8, 3)), {}, "dtype float64"),
        (np.full((8, 3), 2048), {}, "code 2048 does not fit in 11 bits"),
        (np.full((8, 3), -1), {}, "code -1"),
        (np.zeros((33, 3), dtype=np.int64), {}, "33 codebooks"),
        (np.zeros((8, 3), dtype=np.int64), {"num_samples": 1920 * 5}, "needs 5 frames, codes have 3"),
        (np.zeros((8, 3), dtype=np.int64), {"frames_per_packet": 256}, "frames_per_packet 256"),
        (np.zeros((8, 3), dtype=np.int64), {"frames_per_packet": 0}, "frames_per_packet 0"),
        (np.zeros((8, 3), dtype=np.int64), {"model": 5}, "model 5"),
        (np.zeros((8, 3), dtype=np.int64), {"model": "x" * 70000}, "more than the 65535"),
    ],
)
def test_write_rejects_bad_input(codes, kw, match) -> None:
    buf = io.BytesIO()
    with pytest.raises(ValueError, match=match):
        write_mimi(buf, codes, **{"model": "m", **kw})


def test_writer_streams_packets_through_a_pipe() -> None:
    """The reader gets each packet before the writer has finished (a live pipe)."""
    r, w = os.pipe()
    codes = _codes(8, 60)
    got: list[np.ndarray] = []
    first = threading.Event()

    def consume() -> None:
        with os.fdopen(r, "rb") as f:
            reader = MimiReader(f)
            for chunk in reader:
                got.append(chunk)
                first.set()
            assert reader.complete

    t = threading.Thread(target=consume)
    t.start()
    with os.fdopen(w, "wb") as f:
        with MimiWriter(f, MimiHeader(num_codebooks=8, model="m"), frames_per_packet=25) as writer:
            writer.write(codes[:, :10])
            writer.write(codes[:, 10:30])  # 30 buffered -> one 25-frame packet goes out now
            assert first.wait(10), "packet did not reach the reader while the writer was open"
            assert [c.shape[1] for c in got] == [25]
            writer.write(codes[:, 30:33])
            writer.flush()  # a short packet for latency
            writer.write(codes[:, 33:])
    t.join(10)
    assert [c.shape[1] for c in got] == [25, 8, 25, 2]
    np.testing.assert_array_equal(np.concatenate(got, axis=1), codes)


def test_over_a_socket() -> None:
    """Writer and reader on the two ends of a socket: short reads are reassembled."""
    a, b = socket.socketpair()
    codes = _codes(32, 300, seed=5)

    def send() -> None:
        out = a.makefile("wb", buffering=0)  # unbuffered: every packet is one send
        write_mimi(out, codes, model="sock", frames_per_packet=7)
        a.shutdown(socket.SHUT_WR)

    t = threading.Thread(target=send)
    t.start()
    reader = MimiReader(b.makefile("rb"), source="socket")
    chunks = list(reader)
    t.join(10)
    assert reader.complete and [c.shape[1] for c in chunks] == [7] * 42 + [6]
    np.testing.assert_array_equal(np.concatenate(chunks, axis=1), codes)
    a.close()
    b.close()


def test_writer_without_clean_close_leaves_a_cut_stream() -> None:
    buf = io.BytesIO()
    with pytest.raises(RuntimeError):
        with MimiWriter(buf, MimiHeader(num_codebooks=2, model="m"), frames_per_packet=4) as writer:
            writer.write(_codes(2, 9))
            raise RuntimeError("encoder died")
    with pytest.raises(MimiFormatError, match="no end packet"):
        read_mimi(io.BytesIO(buf.getvalue()))
    salvaged = read_mimi(io.BytesIO(buf.getvalue()), salvage=True)
    np.testing.assert_array_equal(salvaged.codes, _codes(2, 9)[:, :8])


def test_writer_close_checks_num_samples() -> None:
    buf = io.BytesIO()
    writer = MimiWriter(buf, MimiHeader(num_codebooks=2, model="m", num_samples=1920 * 3))
    writer.write(_codes(2, 2))
    with pytest.raises(ValueError, match="needs 3 frames, 2 were written"):
        writer.close()
    assert not buf.getvalue().endswith(END_PACKET)


# ---- errors: each names the byte offset and what was wrong ----

GOOD = _blob(_codes(8, 60), num_samples=60 * 1920)
HLEN = struct.unpack(">H", GOOD[5:7])[0]
P0 = 7 + HLEN  # first packet
P1 = P0 + 280  # second packet
P2 = P1 + 280  # third packet (10 frames, 110 bytes of payload)
END = P2 + 115


def _with(blob: bytes, pos: int, value: bytes) -> bytes:
    return blob[:pos] + value + blob[pos + len(value) :]


def _header_blob_text(text: str) -> bytes:
    blob = text.encode()
    return b"MIMI\x01" + struct.pack(">H", len(blob)) + blob + END_PACKET


def _header_blob(obj) -> bytes:
    return _header_blob_text(json.dumps(obj))


@pytest.mark.parametrize(
    ("blob", "offset", "match"),
    [
        (b"", 0, "empty stream"),
        (b"RIFF\x00\x00\x00\x00WAVE", 0, "bad magic b'RIFF'"),
        (b"MI", 2, "cut short inside the magic"),
        (b"MIMI\x01\x00", 6, "cut short inside the header prefix"),
        (_with(GOOD, 4, b"\x02"), 4, "unknown .mimi format version 2"),
        (GOOD[:30], 30, f"cut short inside the {HLEN}-byte JSON header"),
        (_header_blob([1, 2]), 7, "JSON is a list"),
        (b"MIMI\x01\x00\x03\xff\xfe{" + END_PACKET, 7, "not UTF-8 JSON"),
        (_header_blob({"sample_rate": 24000}), 7, "missing key"),
        (
            _header_blob(
                {"sample_rate": 24000, "frame_rate": 12.5, "num_codebooks": 40, "codebook_bits": 11,
                 "num_samples": None, "model": "m"}
            ),
            7,
            "num_codebooks 40",
        ),
        (_header_blob_text('{"sample_rate":24000,"frame_rate":NaN,"num_codebooks":8,"codebook_bits":11,'
                           '"num_samples":null,"model":"m"}'), 7, "non-finite number NaN"),
        (_header_blob_text('{"sample_rate":24000,"frame_rate":12.5,"num_codebooks":true,"codebook_bits":11,'
                           '"num_samples":null,"model":"m"}'), 7, "num_codebooks True is not an integer"),
        (_header_blob_text("[" * 5000 + "]" * 5000), 7, "RecursionError"),
        (_with(GOOD, P1 + 100, bytes([GOOD[P1 + 100] ^ 0x10])), P1, "CRC mismatch in packet 1 \\(25 frames\\)"),
        (_with(GOOD, P2, b"\x07"), P2, "packet 2 \\(7 frames\\)"),
        (_with(GOOD, END + 1, b"\x00"), END, "CRC mismatch in end packet"),
        (GOOD[: P1 + 50], P1, "stream cut short: packet 1 \\(25 frames\\) needs 280 bytes, only 50 left"),
        (GOOD[:END], END, "stream cut short: no end packet after 3 packets"),
        (GOOD[: END + 2], END, "end packet needs 5 bytes, only 2 left"),
        (GOOD + b"\x00", END + 5, "1 unexpected byte\\(s\\) after the end packet"),
    ],
)
def test_errors_name_offset_and_reason(blob: bytes, offset: int, match: str) -> None:
    with pytest.raises(MimiFormatError, match=match) as info:
        read_mimi(io.BytesIO(blob))
    assert info.value.offset == offset
    assert f"(at byte {offset})" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_num_samples_disagreeing_with_frames_is_an_error() -> None:
    blob = _blob(_codes(2, 3))  # num_samples null
    text = blob[7 : 7 + struct.unpack(">H", blob[5:7])[0]]
    fixed = text.replace(b'"num_samples":null', b'"num_samples":9999')
    bad = b"MIMI\x01" + struct.pack(">H", len(fixed)) + fixed + blob[7 + len(text) :]
    with pytest.raises(MimiFormatError, match="num_samples 9999 needs 6 frames, the stream has 3"):
        read_mimi(io.BytesIO(bad))
    salvaged = read_mimi(io.BytesIO(bad), salvage=True)
    assert salvaged.num_frames == 3 and not salvaged.intact


def test_error_names_the_file(tmp_path) -> None:
    path = tmp_path / "talk.mimi"
    path.write_bytes(GOOD[:P1 + 3])
    with pytest.raises(MimiFormatError, match=f"^{path}: stream cut short"):
        read_mimi(path)


@pytest.mark.parametrize(
    ("blob", "frames"),
    [
        (GOOD[: P1 + 50], 25),
        (_with(GOOD, P2 + 4, b"\xff"), 50),
        (_with(GOOD, P0 + 1, b"\xff"), 0),
        (GOOD[:END], 60),
        (GOOD + b"junk", 60),
    ],
)
def test_salvage_returns_every_frame_before_the_damage(blob: bytes, frames: int) -> None:
    good = read_mimi(io.BytesIO(GOOD)).codes
    data = read_mimi(io.BytesIO(blob), salvage=True)
    assert not data.intact and isinstance(data.error, MimiFormatError)
    np.testing.assert_array_equal(data.codes, good[:, :frames])


def test_salvage_still_raises_on_a_bad_header() -> None:
    with pytest.raises(MimiFormatError, match="unknown .mimi format version 9"):
        read_mimi(io.BytesIO(_with(GOOD, 4, b"\x09")), salvage=True)


def test_format_and_audio_code_do_not_need_torch() -> None:
    """mimi_codec/bitstream and mimi_codec/audio.py load and work with torch made unimportable
    (loaded from their files, apart from the package __init__ that also exports the model)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "mimi_codec"
    code = f"""
import importlib.util, io, sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
spec = importlib.util.spec_from_file_location(
    "bits", {str(root / "bitstream" / "__init__.py")!r},
    submodule_search_locations=[{str(root / "bitstream")!r}])
bits = importlib.util.module_from_spec(spec); sys.modules["bits"] = bits; spec.loader.exec_module(bits)
spec = importlib.util.spec_from_file_location("audio", {str(root / "audio.py")!r})
audio = importlib.util.module_from_spec(spec); sys.modules["audio"] = audio; spec.loader.exec_module(audio)
import numpy as np
buf = io.BytesIO()
bits.write_mimi(buf, np.arange(24).reshape(3, 8), model="m")
print(bits.read_mimi(io.BytesIO(buf.getvalue())).codes.sum(), len(audio.resample(np.zeros(100), 16000, 24000)))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["276", "150"]
