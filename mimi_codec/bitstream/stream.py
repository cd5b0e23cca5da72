"""Streaming `.mimi` writer and reader over any binary file object (file, pipe, socket).

The writer sends the header at once and a CRC-checked packet whenever `frames_per_packet`
frames are buffered, so a reader on the other end of a pipe gets codes while they are made.
The reader yields each packet's codes as it arrives and never reads past the end packet.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from .header import MAGIC, PREFIX, VERSION, MimiFormatError, MimiHeader
from .packing import pack_codes, payload_size, unpack_codes

#: Frames per packet a writer uses unless told otherwise (2 s at 12.5 Hz).
DEFAULT_FRAMES_PER_PACKET = 25
#: Most frames one packet can hold (nframes is a u8 and 0 marks the end).
MAX_FRAMES_PER_PACKET = 255
#: Bytes a packet adds around its payload: nframes u8 + CRC-32 u32.
PACKET_OVERHEAD = 5
#: The end packet: nframes 0 then the big-endian CRC-32 of that one byte.
END_PACKET = b"\x00" + zlib.crc32(b"\x00").to_bytes(4, "big")


def as_code_array(codes: Any, num_codebooks: int | None = None, bits: int = 11) -> np.ndarray:
    """Check and convert codes (numpy array, torch tensor or nested lists) to [K, F] int64.

    Args:
        codes: [K, F] or [1, K, F] integer codes, each in 0 .. 2**bits - 1.
        num_codebooks: K the codes must have (None: any 1..32).
        bits: code width the values must fit.

    Raises:
        ValueError: wrong shape, non-integer dtype, or a code out of range.
    """
    if hasattr(codes, "detach"):  # a torch tensor, without importing torch
        codes = codes.detach().cpu().numpy()
    arr = np.asarray(codes)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"codes have shape {tuple(arr.shape)}, expected [K, F] or [1, K, F]")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"codes have dtype {arr.dtype}, expected integers")
    k = arr.shape[0]
    if num_codebooks is not None and k != num_codebooks:
        raise ValueError(f"codes have {k} codebooks, expected {num_codebooks}")
    if not 1 <= k <= 32:
        raise ValueError(f"codes have {k} codebooks, expected 1..32")
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= 1 << bits:
            bad = lo if lo < 0 else hi
            raise ValueError(f"code {bad} does not fit in {bits} bits (expected 0..{(1 << bits) - 1})")
    return arr.astype(np.int64, copy=False)


def _flush(file: BinaryIO) -> None:
    flush = getattr(file, "flush", None)
    if flush is not None:
        flush()


class MimiWriter:
    """Write a `.mimi` stream packet by packet.

    Use as a context manager: a clean exit writes the last packet and the end packet; an
    exception leaves the stream without an end packet, so readers see it as cut short.

    Args:
        file: binary file object opened for writing (not closed by the writer).
        header: the stream header; its `num_codebooks`/`codebook_bits` fix the packet layout.
        frames_per_packet: frames buffered before a packet goes out, 1..255 (25 = 2 s).
    """

    def __init__(self, file: BinaryIO, header: MimiHeader, frames_per_packet: int = DEFAULT_FRAMES_PER_PACKET) -> None:
        if not isinstance(frames_per_packet, int) or not 1 <= frames_per_packet <= MAX_FRAMES_PER_PACKET:
            raise ValueError(f"frames_per_packet {frames_per_packet!r} is not in 1..{MAX_FRAMES_PER_PACKET}")
        self.file = file
        self.header = header
        self.frames_per_packet = frames_per_packet
        self.frames_written = 0
        self.packets_written = 0
        self.closed = False
        self._pending: list[np.ndarray] = []
        self._pending_frames = 0
        blob = header.to_bytes()
        file.write(blob)
        self.bytes_written = len(blob)
        _flush(file)

    def write(self, codes: Any) -> None:
        """Add frames; every full packet is written (and flushed) at once.

        Args:
            codes: [K, F] or [1, K, F] integer codes, K = header.num_codebooks, any F >= 0.
        """
        if self.closed:
            raise ValueError("write to a closed MimiWriter")
        arr = as_code_array(codes, self.header.num_codebooks, self.header.codebook_bits)
        if arr.shape[1] == 0:
            return
        self._pending.append(arr)
        self._pending_frames += arr.shape[1]
        if self._pending_frames < self.frames_per_packet:
            return
        buffered = np.concatenate(self._pending, axis=1)
        full = (buffered.shape[1] // self.frames_per_packet) * self.frames_per_packet
        for start in range(0, full, self.frames_per_packet):
            self._write_packet(buffered[:, start : start + self.frames_per_packet])
        rest = buffered[:, full:]
        self._pending = [rest] if rest.shape[1] else []
        self._pending_frames = rest.shape[1]
        _flush(self.file)

    def flush(self) -> None:
        """Send the buffered frames now as a shorter packet (for low latency on a live link)."""
        if self._pending_frames:
            self._write_packet(np.concatenate(self._pending, axis=1))
            self._pending, self._pending_frames = [], 0
        _flush(self.file)

    def close(self) -> None:
        """Write the buffered frames and the end packet. Does not close `file`.

        Raises:
            ValueError: the header's `num_samples` needs a different number of frames than written
                (the end packet is then not written).
        """
        if self.closed:
            return
        expected = self.header.expected_frames
        total = self.frames_written + self._pending_frames
        if expected is not None and expected != total:
            raise ValueError(
                f"header num_samples {self.header.num_samples} needs {expected} frames, {total} were written"
            )
        self.flush()
        self.file.write(END_PACKET)
        self.bytes_written += len(END_PACKET)
        _flush(self.file)
        self.closed = True

    def _write_packet(self, codes: np.ndarray) -> None:
        head = bytes([codes.shape[1]])
        payload = pack_codes(codes, self.header.codebook_bits)
        crc = zlib.crc32(payload, zlib.crc32(head))
        self.file.write(head + payload + crc.to_bytes(4, "big"))
        self.bytes_written += len(payload) + PACKET_OVERHEAD
        self.frames_written += codes.shape[1]
        self.packets_written += 1

    def __enter__(self) -> MimiWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()


@dataclass(frozen=True)
class StreamStats:
    """Byte accounting of what a reader has read so far.

    Attributes:
        header_bytes: magic + version + length + JSON.
        num_packets: intact packets read (not counting the end packet).
        num_frames: frames in those packets.
        payload_bytes: bytes of packed codes in those packets.
        framing_bytes: nframes and CRC bytes of those packets, plus the end packet if read.
        max_packet_frames: frames in the largest packet (0 if none).
    """

    header_bytes: int  # magic + version + hlen + JSON
    num_packets: int  # intact data packets
    num_frames: int  # frames in those packets
    payload_bytes: int  # packed code bytes
    framing_bytes: int  # nframes + CRC bytes, end packet included
    max_packet_frames: int  # largest packet, in frames

    @property
    def total_bytes(self) -> int:
        """Every byte accounted for: header, payloads and framing."""
        return self.header_bytes + self.payload_bytes + self.framing_bytes

    @property
    def overhead(self) -> float:
        """Framing bytes per payload byte (0.018 for 25-frame packets at 8 codebooks)."""
        return self.framing_bytes / self.payload_bytes if self.payload_bytes else 0.0


class MimiReader:
    """Read a `.mimi` stream packet by packet; iterating yields each packet's codes [K, n].

    The header is read on construction. Iteration stops at the end packet without reading
    further, so it is safe on a pipe or socket.

    Args:
        file: binary file object opened for reading.
        salvage: on damage, stop quietly and keep the error in `.error` instead of raising;
            every frame before the damage has then been yielded.
        source: name of the stream for error messages (e.g. the file name).

    Raises:
        MimiFormatError: bad magic, unknown version or bad header (even when salvaging),
            and, while iterating without `salvage`, a CRC mismatch or a stream cut short.
    """

    def __init__(self, file: BinaryIO, salvage: bool = False, source: str = "") -> None:
        self.file = file
        self.salvage = salvage
        self.source = source
        self.offset = 0
        self.complete = False
        self.error: MimiFormatError | None = None
        self._packets = 0
        self._frames = 0
        self._payload = 0
        self._framing = 0
        self._max_frames = 0
        self._done = False
        self.header = self._read_header()
        self.header_bytes = self.offset

    def _fail(self, reason: str, offset: int) -> MimiFormatError:
        return MimiFormatError(reason, offset, self.source)

    def _read_exact(self, n: int) -> bytes:
        chunks, got = [], 0
        while got < n:
            chunk = self.file.read(n - got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        data = b"".join(chunks)
        self.offset += len(data)
        return data

    def _read_header(self) -> MimiHeader:
        prefix = self._read_exact(PREFIX.size)
        if len(prefix) < 4 or prefix[:4] != MAGIC:
            if len(prefix) == 0:
                raise self._fail("empty stream, expected a .mimi header", 0)
            if len(prefix) < 4 and MAGIC.startswith(prefix):
                raise self._fail("stream cut short inside the magic", len(prefix))
            raise self._fail(f"bad magic {prefix[:4]!r}, expected {MAGIC!r}: not a .mimi stream", 0)
        if len(prefix) < PREFIX.size:
            raise self._fail("stream cut short inside the header prefix", len(prefix))
        _, version, hlen = PREFIX.unpack(prefix)
        if version != VERSION:
            raise self._fail(f"unknown .mimi format version {version} (this reader knows version {VERSION})", 4)
        blob = self._read_exact(hlen)
        if len(blob) < hlen:
            raise self._fail(f"stream cut short inside the {hlen}-byte JSON header", self.offset)
        try:
            return MimiHeader.from_json(blob, PREFIX.size)
        except MimiFormatError as e:
            raise e.with_source(self.source) from None

    @property
    def stats(self) -> StreamStats:
        """What has been read so far (complete once iteration has finished)."""
        return StreamStats(
            self.header_bytes, self._packets, self._frames, self._payload, self._framing, self._max_frames
        )

    def __iter__(self) -> Iterator[np.ndarray]:
        while not self._done:
            try:
                codes = self._next_packet()
            except MimiFormatError as e:
                self._done = True
                if not self.salvage:
                    raise
                self.error = e
                return
            if codes is None:
                self._done = True
                return
            yield codes

    def _next_packet(self) -> np.ndarray | None:
        start = self.offset
        head = self._read_exact(1)
        if not head:
            raise self._fail(f"stream cut short: no end packet after {self._packets} packets", start)
        nframes = head[0]
        h = self.header
        size = payload_size(nframes, h.num_codebooks, h.codebook_bits)
        body = self._read_exact(size + 4)
        if len(body) < size + 4:
            what = "end packet" if nframes == 0 else f"packet {self._packets} ({nframes} frames)"
            raise self._fail(
                f"stream cut short: {what} needs {size + 5} bytes, only {len(body) + 1} left (no end packet)", start
            )
        payload, stored = body[:size], int.from_bytes(body[size:], "big")
        computed = zlib.crc32(payload, zlib.crc32(head))
        if stored != computed:
            what = "end packet" if nframes == 0 else f"packet {self._packets} ({nframes} frames)"
            raise self._fail(f"CRC mismatch in {what}: stored {stored:08x}, computed {computed:08x}", start)
        self._framing += 5
        if nframes == 0:
            self.complete = True
            return None
        self._packets += 1
        self._frames += nframes
        self._payload += size
        self._max_frames = max(self._max_frames, nframes)
        return unpack_codes(payload, nframes, h.num_codebooks, h.codebook_bits)

    def check_end(self) -> MimiFormatError | None:
        """Whole-stream checks once iteration has reached the end packet: nothing follows it,
        and the frame count is the one `num_samples` needs.

        This reads on past the end packet until end of file, so call it on files (or a pipe
        whose writer closes), not on a socket that stays open. Without `salvage` a problem is
        raised; with it, it is stored in `.error` and returned.

        Raises:
            MimiFormatError: bytes after the end packet, or a frame count that disagrees with
                `num_samples` (unless `salvage`).
        """
        if not self.complete or self.error is not None:
            return self.error
        error = None
        end = self.offset
        trailing = self.file.read(1)
        if trailing:
            more = len(trailing) + len(self.file.read())
            error = self._fail(f"{more} unexpected byte(s) after the end packet", end)
        elif self.header.expected_frames is not None and self.header.expected_frames != self._frames:
            error = self._fail(
                f"header num_samples {self.header.num_samples} needs {self.header.expected_frames} frames, "
                f"the stream has {self._frames}",
                end - len(END_PACKET),
            )
        if error is not None and not self.salvage:
            raise error
        self.error = error
        return error

    def read_all(self) -> np.ndarray:
        """Read every remaining packet. Returns codes [K, F] int64 (F may be 0)."""
        parts = list(self)
        if not parts:
            return np.zeros((self.header.num_codebooks, 0), dtype=np.int64)
        return np.concatenate(parts, axis=1)
