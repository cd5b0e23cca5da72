"""`mimi decode` (.mimi -> audio) and `mimi roundtrip` (audio -> codes -> audio in one go)."""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
from pathlib import Path
from typing import Any

import click
import numpy as np

from mimi_moshi_cli._app import fail
from mimi_moshi_cli._io import atomic_path
from mimi_moshi_cli.mimi_common import (
    OFFICIAL_MODEL_ID,
    ChunkDecoder,
    Progress,
    check_header_matches_model,
    check_model_choice,
    common_options,
    decoder_precision_option,
    is_stdio,
    load_model,
    model_options,
    say,
    warn,
)


def _output_length(header: Any, decoded: int, out_rate: int | None, intact: bool) -> int | None:
    """Samples to write at out_rate: the input's exact length when the header tells it."""
    if out_rate is None or out_rate == header.sample_rate:
        return None
    src_rate, src_len = header.extra.get("source_sample_rate"), header.extra.get("source_num_samples")
    if intact and src_rate == out_rate and isinstance(src_len, int) and header.num_samples == decoded:
        return src_len
    return None


def decode_stream(model: Any, reader: Any, name: str, quiet: bool) -> np.ndarray:
    """Decode a .mimi stream packet by packet as the reader delivers it (so decoding starts
    while a pipe is still filling), trimmed to the header's `num_samples`.

    Args:
        model: the Mimi model.
        reader: a MimiReader whose header has been read.
        name: the stream's name for messages.
        quiet: no progress bar.

    Returns:
        audio [T] float32 at model.sample_rate.
    """
    header = reader.header
    check_header_matches_model(header, model, name)
    with model.streaming(1), Progress(f"decoding {name}", header.expected_frames, quiet) as progress:
        decoder = ChunkDecoder(model, header.num_codebooks)
        for codes in reader:
            progress.advance(decoder.feed(codes))
        reader.check_end()
        wav = decoder.finish()
    return wav if header.num_samples is None else wav[: header.num_samples]


def _same_weights(a: str, b: str) -> bool:
    """Model ids name the same weights: equal, local files with the same content hash, or the
    official id and a local copy of the official file (by its file name)."""
    if a == b:
        return True
    name_a, _, hash_a = a.partition("@sha256:")
    name_b, _, hash_b = b.partition("@sha256:")
    if hash_a and hash_b:
        return hash_a == hash_b
    official_file = OFFICIAL_MODEL_ID.rsplit(":", 1)[1] + ".safetensors"
    if a == OFFICIAL_MODEL_ID and hash_b:
        return name_b == official_file
    if b == OFFICIAL_MODEL_ID and hash_a:
        return name_a == official_file
    return False


def _check_model_field(header_model: str, ours: str, name: str) -> None:
    if not _same_weights(header_model, ours):
        warn(f"{name} was made with weights {header_model!r}, decoding with {ours!r}")


def _write_audio(out: str, wav: np.ndarray, rate: int, out_rate: int | None, length: int | None, force: bool) -> int:
    from mimi_codec.audio import format_for_name, save_audio

    if is_stdio(out):
        buf = io.BytesIO()
        n = save_audio(buf, wav, rate, out_rate, length, format="WAV")
        sys.stdout.buffer.write(buf.getvalue())
        sys.stdout.buffer.flush()
        return n
    fmt = format_for_name(out)
    with atomic_path(out, force) as tmp:
        return save_audio(tmp, wav, rate, out_rate, length, format=fmt)


def _precheck(src: str, out: str, force: bool) -> None:
    if is_stdio(out) and sys.stdout.isatty():
        fail("refusing to write binary audio to a terminal: redirect stdout or give a file name")
    if not is_stdio(src) and not Path(src).exists():
        fail(f"input {src} does not exist")
    if not is_stdio(out):
        from mimi_codec.audio import format_for_name

        format_for_name(out)
        if Path(out).exists() and not force:
            fail(f"output {out} already exists (use --force to overwrite)")


sample_rate_option = click.option(
    "--sample-rate", type=click.IntRange(min=1), default=None, metavar="HZ",
    help="Resample the output to HZ (default: the codec's 24000). At the input's own rate the "
         "output has exactly the input's length.",
)


@click.command("decode")
@click.argument("src", metavar="IN.mimi")
@click.argument("out", metavar="OUT.wav")
@sample_rate_option
@click.option("--salvage", is_flag=True, help="Decode every intact frame of a damaged file instead of failing.")
@decoder_precision_option
@model_options
@common_options
def decode(
    src: str, out: str, sample_rate: int | None, salvage: bool, decoder_precision: str,
    model_name: str | None, weights: str | None, config: str | None, device: str, force: bool, quiet: bool,
) -> None:
    """Decode a .mimi file to audio (24 kHz wav by default; .flac/.ogg by extension).

    Without --model/--weights/--config, a file whose header names a model shipped in the
    package (e.g. "mimi-codec:small") is decoded with that model, any other with the official one.

    \b
      mimi decode talk.mimi talk.wav
      mimi decode talk.mimi talk.wav --sample-rate 48000
      mimi decode damaged.mimi partial.wav --salvage
    """
    from mimi_codec.bitstream import MimiReader

    from mimi_codec.named_models import model_for_id

    check_model_choice(model_name, weights, config)
    _precheck(src, out, force)
    with contextlib.ExitStack() as stack:
        file = sys.stdin.buffer if is_stdio(src) else stack.enter_context(open(src, "rb"))
        label = "<stdin>" if is_stdio(src) else src
        reader = MimiReader(file, salvage=salvage, source=label)  # a bad header fails before the model loads
        shipped = model_for_id(reader.header.model)
        if model_name is None and weights is None and config is None and shipped is not None:
            model_name = shipped.name
            say(quiet, f"{label} was made with the shipped model {shipped.name!r}; decoding with it")
        model, name = load_model(weights, config, device, model_name=model_name)
        model.set_decoder_precision(decoder_precision)
        wav = decode_stream(model, reader, label, quiet)
    header = reader.header
    _check_model_field(header.model, name, label)
    if reader.error is not None:
        warn(f"{reader.error}; decoded the {reader.stats.num_frames} intact frames before it")
    length = _output_length(header, len(wav), sample_rate, reader.error is None)
    n = _write_audio(out, wav, model.sample_rate, sample_rate, length, force)
    rate = sample_rate or model.sample_rate
    say(quiet, f"wrote {'stdout' if is_stdio(out) else out}: {n:,} samples at {rate} Hz ({n / rate:.2f} s)")


@click.command("roundtrip")
@click.argument("src", metavar="IN")
@click.argument("out", metavar="OUT.wav")
@click.option("-q", "--codebooks", type=click.IntRange(1, 32), default=8, show_default=True,
              help="Codebooks per frame: 8 = 1.1 kbps, 32 = 4.4 kbps.")
@sample_rate_option
@decoder_precision_option
@model_options
@common_options
def roundtrip(
    src: str, out: str, codebooks: int, sample_rate: int | None, decoder_precision: str,
    model_name: str | None, weights: str | None, config: str | None, device: str, force: bool, quiet: bool,
) -> None:
    """Encode to .mimi and decode back in one go; prints the bitrate and the .mimi size.

    \b
      mimi roundtrip talk.wav talk_1k1.wav
      mimi roundtrip talk.wav talk_4k4.wav -q 32
      mimi roundtrip talk.wav talk_small.wav --model small
    """
    from mimi_codec.bitstream import MimiReader

    from mimi_moshi_cli.mimi_encode import encode_files

    check_model_choice(model_name, weights, config)
    _precheck(src, out, force)
    model, name = load_model(weights, config, device, codebooks, model_name)
    model.set_decoder_precision(decoder_precision)
    with tempfile.TemporaryDirectory(prefix="mimi-roundtrip-") as tmpdir:
        # the codes go through a real .mimi file, as `encode` then `decode` would
        mimi_path = str(Path(tmpdir) / "codes.mimi")
        results = encode_files(model, name, [(src, mimi_path)], codebooks, True, quiet)
        with open(mimi_path, "rb") as f:
            reader = MimiReader(f, source=src)
            wav = decode_stream(model, reader, src, quiet)
    _, frames, _, size = results[0]
    header = reader.header
    length = _output_length(header, len(wav), sample_rate, True)
    n = _write_audio(out, wav, model.sample_rate, sample_rate, length, force)
    seconds = header.num_samples / header.sample_rate
    stats = reader.stats
    rate = sample_rate or model.sample_rate
    click.echo(
        f"{src}: {seconds:.2f} s, {codebooks} codebooks x {header.codebook_bits} bits, {frames} frames: "
        f"{header.bitrate:,.0f} bit/s of codes; .mimi {size:,} bytes = header {stats.header_bytes} + "
        f"payload {stats.payload_bytes:,} + framing {stats.framing_bytes} "
        f"({size * 8 / seconds:,.0f} bit/s in all) -> {'stdout' if is_stdio(out) else out} "
        f"({n:,} samples at {rate} Hz)",
        err=is_stdio(out),
    )
