"""Ogg page framing: split a message into whole, checksummed pages.

The Opus library decodes whatever bytes it is given and keeps garbage in its buffer, which
would poison a session's stream. So every incoming audio message goes through
`split_pages` first: only complete pages with a valid capture pattern, version and CRC
reach the decoder; anything else is a `ValueError` and the message is dropped.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

#: Bytes every Ogg page starts with.
CAPTURE_PATTERN = b"OggS"
#: Fixed part of the page header, before the segment table.
HEADER_SIZE = 27


def _crc_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
        table.append(r & 0xFFFFFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()


def ogg_crc(data: bytes) -> int:
    """The Ogg checksum (CRC-32, polynomial 0x04C11DB7, no reflection, initial value 0).

    Args:
        data: the whole page with its checksum field (bytes 22..25) set to zero.
    """
    crc = 0
    table = _CRC_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[((crc >> 24) ^ byte) & 0xFF]
    return crc


@dataclass(frozen=True)
class OggPage:
    """One parsed page."""

    header_type: int  # flags: 1 continued packet, 2 first page of stream, 4 last page
    granule_position: int  # codec position at the end of the page (48 kHz samples for Opus)
    serial: int  # logical stream id
    sequence: int  # page counter within the stream
    data: bytes  # the whole page, header included, as received


def split_pages(data: bytes) -> list[OggPage]:
    """Split a message into whole Ogg pages, checking each one.

    Every client of the protocol (kyutai's web and Python clients, ours) sends whole pages
    per message, so a message that ends inside a page is an error rather than something to
    buffer: a buffered partial page would swallow the next, valid message.

    Args:
        data: the payload of one audio message.

    Raises:
        ValueError: a wrong capture pattern, version or checksum, or a truncated page.
    """
    pages: list[OggPage] = []
    pos = 0
    while pos < len(data):
        if data[pos : pos + 4] != CAPTURE_PATTERN:
            raise ValueError(f"not an Ogg page at byte {pos}: starts with {data[pos:pos + 4]!r}, expected {CAPTURE_PATTERN!r}")
        if len(data) - pos < HEADER_SIZE:
            raise ValueError(f"truncated Ogg page header at byte {pos}: {len(data) - pos} bytes, expected {HEADER_SIZE}")
        if data[pos + 4] != 0:
            raise ValueError(f"Ogg stream structure version {data[pos + 4]}, expected 0")
        n_segments = data[pos + 26]
        lacing = data[pos + HEADER_SIZE : pos + HEADER_SIZE + n_segments]
        size = HEADER_SIZE + n_segments + sum(lacing)
        if len(lacing) < n_segments or len(data) - pos < size:
            raise ValueError(f"truncated Ogg page at byte {pos}: {len(data) - pos} bytes left, the page needs {size}")
        page = data[pos : pos + size]
        (expected_crc,) = struct.unpack_from("<I", page, 22)
        actual_crc = ogg_crc(page[:22] + b"\0\0\0\0" + page[26:])
        if actual_crc != expected_crc:
            raise ValueError(f"Ogg page checksum {actual_crc:#010x} does not match the stored {expected_crc:#010x}")
        granule, serial, sequence = struct.unpack_from("<qII", page, 6)
        pages.append(OggPage(page[5], granule, serial, sequence, page))
        pos += size
    return pages
