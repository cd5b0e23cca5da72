"""Fuzz the .mimi reader: random damage never raises anything but MimiFormatError, never hangs,
and salvage returns exactly the frames of the packets wholly before the first damaged byte."""

from __future__ import annotations

import io
import signal
import struct
import time

import numpy as np
import pytest

from mimi_codec.bitstream import MimiFormatError, read_mimi, write_mimi

K, F, FPP = 8, 130, 25  # 6 packets: 5 x 25 frames + 1 x 5 frames


@pytest.fixture(scope="module")
def stream() -> tuple[bytes, np.ndarray, list[tuple[int, int]]]:
    """A valid stream, its codes, and (end offset, frames so far) after each packet."""
    codes = np.random.default_rng(1234).integers(0, 2048, size=(K, F))
    buf = io.BytesIO()
    write_mimi(buf, codes, model="fuzz", num_samples=F * 1920 - 100, frames_per_packet=FPP)
    blob = buf.getvalue()
    pos = 7 + struct.unpack(">H", blob[5:7])[0]
    ends, frames = [(pos, 0)], 0  # (first byte after the packet, frames in packets up to it)
    while blob[pos] != 0:
        n = blob[pos]
        pos += 1 + (n * K * 11 + 7) // 8 + 4
        frames += n
        ends.append((pos, frames))
    assert frames == F and len(blob) == pos + 5
    return blob, codes, ends


def _intact_frames(ends: list[tuple[int, int]], first_damage: int) -> int:
    """Frames in the packets that end at or before the first damaged byte."""
    return max(frames for end, frames in ends if end <= first_damage)


class _Watchdog:
    """Fail instead of hanging: SIGALRM after `seconds`."""

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds

    def __enter__(self) -> None:
        def on_alarm(signum, frame):  # noqa: ARG001
            raise TimeoutError(f"reader hung for more than {self.seconds} s")

        self.old = signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(self.seconds)

    def __exit__(self, *exc) -> None:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.old)


def _check(damaged: bytes, first_damage: int, blob: bytes, codes: np.ndarray, ends) -> str:
    """Read `damaged` strictly and salvaging; return 'error' or 'ok'."""
    header_end = ends[0][0]
    try:
        strict = read_mimi(io.BytesIO(damaged))
    except MimiFormatError as e:
        assert e.offset >= 0 and "(at byte" in str(e)
        outcome = "error"
    else:
        # only a harmless change inside the JSON (e.g. a letter of the model name) can pass
        assert first_damage < header_end
        np.testing.assert_array_equal(strict.codes, codes)
        outcome = "ok"
    try:
        salvaged = read_mimi(io.BytesIO(damaged), salvage=True)
    except MimiFormatError:
        assert first_damage < header_end, "salvage raised for damage after the header"
        return outcome
    if first_damage >= header_end:
        expected = _intact_frames(ends, first_damage)
        np.testing.assert_array_equal(salvaged.codes, codes[:, :expected])
        assert salvaged.error is not None
    elif salvaged.codes.shape[0] == K:
        n = salvaged.codes.shape[1]
        np.testing.assert_array_equal(salvaged.codes, codes[:, :n])
    return outcome


def test_fuzz_truncations(stream) -> None:
    blob, codes, ends = stream
    with _Watchdog(60):
        for cut in range(len(blob)):
            assert _check(blob[:cut], cut, blob, codes, ends) == "error"


def test_fuzz_random_mutations(stream) -> None:
    blob, codes, ends = stream
    rng = np.random.default_rng(2024)
    outcomes = {"error": 0, "ok": 0}
    start = time.perf_counter()
    with _Watchdog(60):
        for _ in range(4000):
            data = bytearray(blob)
            kind = rng.integers(4)
            if kind == 0:  # flip 1..4 random bytes to different values
                positions = rng.choice(len(data), size=int(rng.integers(1, 5)), replace=False)
                for p in positions:
                    data[p] = (data[p] + int(rng.integers(1, 256))) % 256
                first = int(positions.min())
            elif kind == 1:  # flip one bit
                first = int(rng.integers(len(data)))
                data[first] ^= 1 << int(rng.integers(8))
            elif kind == 2:  # delete a run of bytes
                first = int(rng.integers(len(data)))
                del data[first : first + int(rng.integers(1, 40))]
            else:  # insert random bytes
                first = int(rng.integers(len(data)))
                data[first:first] = rng.integers(0, 256, size=int(rng.integers(1, 40)), dtype=np.uint8).tobytes()
            outcomes[_check(bytes(data), first, blob, codes, ends)] += 1
    elapsed = time.perf_counter() - start
    assert outcomes["error"] > 3500  # almost every mutation is caught
    assert elapsed < 30


def test_fuzz_appended_garbage(stream) -> None:
    blob, codes, ends = stream
    rng = np.random.default_rng(7)
    for n in range(1, 200):
        junk = rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()
        with pytest.raises(MimiFormatError, match="after the end packet"):
            read_mimi(io.BytesIO(blob + junk))
        np.testing.assert_array_equal(read_mimi(io.BytesIO(blob + junk), salvage=True).codes, codes)
