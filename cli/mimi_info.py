"""`mimi info`: what a .mimi file holds and whether it is intact (no model needed)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from mimi_moshi_cli._app import fail


def describe(data: Any, size: int | None) -> dict[str, Any]:
    """The facts `mimi info` reports, as a JSON-ready dict.

    Args:
        data: a MimiData read with salvage=True.
        size: the file's size in bytes (None for a stream).
    """
    h, s = data.header, data.stats
    frames = data.num_frames
    seconds_codes = frames / h.frame_rate
    duration = h.num_samples / h.sample_rate if h.num_samples is not None else seconds_codes
    return {
        "model": h.model,
        "sample_rate": h.sample_rate,
        "frame_rate": h.frame_rate,
        "num_codebooks": h.num_codebooks,
        "codebook_bits": h.codebook_bits,
        "num_samples": h.num_samples,
        "duration_s": duration,
        "frames": frames,
        "packets": s.num_packets,
        "max_packet_frames": s.max_packet_frames,
        "code_bitrate": h.bitrate,
        "payload_bitrate": s.payload_bytes * 8 / seconds_codes if frames else 0.0,
        "header_bytes": s.header_bytes,
        "payload_bytes": s.payload_bytes,
        "framing_bytes": s.framing_bytes,
        "overhead": s.overhead,
        "file_bytes": size if size is not None else s.total_bytes,
        "file_bitrate": (size if size is not None else s.total_bytes) * 8 / duration if duration else 0.0,
        "intact": data.intact,
        "error": None if data.error is None else str(data.error),
        "extra": h.extra,
    }


def _render(name: str, d: dict[str, Any]) -> str:
    samples = "unknown length (live stream)" if d["num_samples"] is None else f"{d['num_samples']:,} samples"
    lines = [
        ("file", name),
        ("model", d["model"]),
        ("duration", f"{d['duration_s']:.2f} s ({samples} at {d['sample_rate']} Hz)"),
        ("frames", f"{d['frames']:,} at {d['frame_rate']:g} Hz"),
        ("codebooks", f"{d['num_codebooks']} x {d['codebook_bits']} bits"),
        ("bitrate", f"{d['code_bitrate']:,.0f} bit/s of codes (packets carry {d['payload_bitrate']:,.0f} bit/s); "
                    f"{d['file_bitrate']:,.0f} bit/s for the whole file"),
        ("packets", f"{d['packets']:,} (up to {d['max_packet_frames']} frames each)"
                    + (" + end packet" if d["intact"] else "")),
        ("size", f"{d['file_bytes']:,} bytes: header {d['header_bytes']:,}, payload {d['payload_bytes']:,}, "
                 f"packet overhead {d['framing_bytes']:,} ({100 * d['overhead']:.2f}% of payload)"),
        ("integrity", "ok: every packet CRC matches, end packet present" if d["intact"]
                      else f"DAMAGED: {d['error']}; {d['frames']:,} intact frames before it"),
    ]
    if d["extra"]:
        lines.append(("other keys", json.dumps(d["extra"], ensure_ascii=False)))
    return "\n".join(f"{k:<11} {v}" for k, v in lines)


@click.command("info")
@click.argument("src", metavar="FILE.mimi")
@click.option("--json", "as_json", is_flag=True, help="Print the facts as one JSON object.")
def info(src: str, as_json: bool) -> None:
    """Show a .mimi file's duration, codebooks, bitrate, packets, model and integrity.

    Exits with code 2 when the file is damaged (after printing what could be read).
    """
    from mimi_codec.bitstream import read_mimi

    if src == "-":
        data, size, name = read_mimi(sys.stdin.buffer, salvage=True), None, "<stdin>"
    else:
        if not os.path.exists(src):
            fail(f"input {src} does not exist")
        data, size, name = read_mimi(src, salvage=True), os.path.getsize(src), src
    facts = describe(data, size)
    click.echo(json.dumps(facts, ensure_ascii=False) if as_json else _render(name, facts))
    if data.error is not None:
        fail(str(data.error))
