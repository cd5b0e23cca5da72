"""docs/format.md is enough to read .mimi files: an independent reader written in this test
from the doc's rules alone (struct, zlib, json and int arithmetic; no project code) reads
what the library writes, and the doc's worked hex example is byte for byte what it writes."""

from __future__ import annotations

import io
import json
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from mimi_codec.bitstream import write_mimi

DOC = Path(__file__).resolve().parents[2] / "docs" / "format.md"


def spec_read(data: bytes) -> tuple[dict, list[list[int]]]:
    """Read a .mimi v1 stream following docs/format.md "Reading, step by step".

    Returns the header and the frames (each a list of K codes). Raises ValueError on damage.
    """
    if data[0:4] != b"MIMI":
        raise ValueError("bad magic")
    if data[4] != 1:
        raise ValueError("unknown version")
    (hlen,) = struct.unpack(">H", data[5:7])
    header = json.loads(data[7 : 7 + hlen].decode("utf-8"))
    k, b = header["num_codebooks"], header["codebook_bits"]
    pos = 7 + hlen
    frames: list[list[int]] = []
    while True:
        if pos >= len(data):
            raise ValueError("cut short")
        n = data[pos]
        if n == 0:
            if data[pos + 1 : pos + 5] != bytes.fromhex("d202ef8d"):
                raise ValueError("bad end packet")
            pos += 5
            break
        size = -(-n * k * b // 8)
        payload = data[pos + 1 : pos + 1 + size]
        (crc,) = struct.unpack(">I", data[pos + 1 + size : pos + 5 + size])
        if zlib.crc32(data[pos : pos + 1 + size]) != crc:
            raise ValueError("crc")
        as_int = int.from_bytes(payload, "big")
        total_bits = size * 8
        codes = []
        for i in range(n * k):
            shift = total_bits - (i + 1) * b  # code i occupies bits i*b .. i*b+b-1 from the MSB
            codes.append((as_int >> shift) & ((1 << b) - 1))
        frames.extend(codes[f * k : (f + 1) * k] for f in range(n))
        pos += size + 5
    if pos != len(data):
        raise ValueError("data after the end packet")
    if header["num_samples"] is not None:
        per_frame = header["sample_rate"] / header["frame_rate"]
        assert len(frames) == -(-header["num_samples"] // int(per_frame))
    return header, frames


@pytest.mark.parametrize(("k", "f", "fpp"), [(8, 125, 25), (1, 1, 25), (32, 300, 255), (3, 50, 7), (5, 0, 25)])
def test_independent_reader_reads_library_output(k: int, f: int, fpp: int) -> None:
    codes = np.random.default_rng(k * 1000 + f).integers(0, 2048, size=(k, f))
    buf = io.BytesIO()
    write_mimi(buf, codes, model="kyutai/x", num_samples=f * 1920 - 3 if f else 0, frames_per_packet=fpp,
               extra={"source_sample_rate": 44100})
    header, frames = spec_read(buf.getvalue())
    assert header["num_codebooks"] == k and header["codebook_bits"] == 11 and header["model"] == "kyutai/x"
    assert header["sample_rate"] == 24000 and header["frame_rate"] == 12.5
    assert header["source_sample_rate"] == 44100
    assert len(frames) == f
    if f:
        np.testing.assert_array_equal(np.array(frames).T, codes)


def test_independent_reader_rejects_damage() -> None:
    buf = io.BytesIO()
    write_mimi(buf, np.arange(16).reshape(2, 8), model="m", frames_per_packet=3)
    blob = buf.getvalue()
    with pytest.raises(ValueError, match="crc"):
        spec_read(blob[:-20] + bytes([blob[-20] ^ 1]) + blob[-19:])
    with pytest.raises(ValueError, match="cut short"):
        spec_read(blob[:-5])


def test_doc_worked_example_is_what_the_library_writes() -> None:
    text = DOC.read_text(encoding="utf-8")
    block = re.search(r"The whole stream is (\d+) bytes:\n\n```\n(.*?)```", text, re.S)
    assert block is not None, "worked example missing from docs/format.md"
    doc_bytes = bytes.fromhex(block.group(2).replace("\n", " "))
    assert len(doc_bytes) == int(block.group(1)) == 144
    buf = io.BytesIO()
    write_mimi(buf, np.array([[1, 1024, 0], [2047, 5, 2047]]), model="example", num_samples=5000,
               frames_per_packet=2)
    assert buf.getvalue() == doc_bytes
    header, frames = spec_read(doc_bytes)
    assert frames == [[1, 2047], [1024, 5], [0, 2047]]
    assert header["num_samples"] == 5000
