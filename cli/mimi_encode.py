"""`mimi encode`: audio files -> `.mimi` streams, several inputs batched on the model."""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path
from typing import Any, BinaryIO

import click

from mimi_moshi_cli._app import fail
from mimi_moshi_cli._io import atomic_path
from mimi_moshi_cli.mimi_common import (
    Progress,
    check_model_choice,
    common_options,
    encode_chunks,
    is_stdio,
    load_model,
    model_options,
    native_stderr_silenced,
    say,
)


def plan_outputs(paths: tuple[str, ...], output_dir: str | None) -> list[tuple[str, str]]:
    """Pair inputs with outputs: `IN OUT` or `IN... -o DIR` (DIR/<stem>.mimi)."""
    if output_dir is None:
        if len(paths) != 2:
            raise click.UsageError("give one input and one output (IN OUT.mimi), or several inputs with -o DIR")
        return [(paths[0], paths[1])]
    if "-" in paths:
        raise click.UsageError("'-' (stdin) cannot be used with -o DIR; use `mimi encode - OUT.mimi`")
    pairs, seen = [], {}
    for path in paths:
        out = str(Path(output_dir) / (Path(path).stem + ".mimi"))
        if out in seen:
            raise ValueError(f"inputs {seen[out]} and {path} would both be written to {out}")
        seen[out] = path
        pairs.append((path, out))
    return pairs


def _read_input(path: str) -> Any:
    from mimi_codec.audio import load_audio

    if is_stdio(path):
        return load_audio(io.BytesIO(sys.stdin.buffer.read()), name="<stdin>")
    return load_audio(path)


def encode_files(
    model: Any, model_name: str, pairs: list[tuple[str, str]], num_codebooks: int, force: bool, quiet: bool
) -> list[tuple[str, int, float, int]]:
    """Encode one batch: every input padded to the longest, each output trimmed to its frames.

    Outputs are written packet by packet while the model runs (to stdout as they come), each
    through a temporary file renamed at the end, so a failure leaves no partial file.

    Returns:
        (output, frames, seconds of audio, bytes) per file.
    """
    from mimi_codec.bitstream import MimiHeader, MimiWriter

    with native_stderr_silenced():
        audios = [_read_input(src) for src, _ in pairs]
    fs = model.frame_size
    frames = [-(-len(a.wav) // fs) for a in audios]
    with contextlib.ExitStack() as stack:
        writers = []
        for (_, out), audio in zip(pairs, audios):
            header = MimiHeader(
                num_codebooks=num_codebooks,
                model=model_name,
                num_samples=len(audio.wav),
                sample_rate=model.sample_rate,
                frame_rate=model.frame_rate,
                codebook_bits=(model.cardinality - 1).bit_length(),
                extra={"source_sample_rate": audio.source_sample_rate, "source_num_samples": audio.source_num_samples},
            )
            file: BinaryIO
            if is_stdio(out):
                file = sys.stdout.buffer
            else:
                tmp = stack.enter_context(atomic_path(out, force))
                file = stack.enter_context(open(tmp, "wb"))
            writers.append(MimiWriter(file, header))
        label = pairs[0][0] if len(pairs) == 1 else f"{len(pairs)} files"
        done = 0
        with Progress(f"encoding {label}", max(frames), quiet) as progress:
            for codes in encode_chunks(model, [a.wav for a in audios], num_codebooks):
                for i, writer in enumerate(writers):
                    keep = max(0, min(codes.shape[2], frames[i] - done))
                    writer.write(codes[i, :, :keep])
                done += codes.shape[2]
                progress.advance(codes.shape[2])
        for writer in writers:
            writer.close()
    return [(out, frames[i], len(a.wav) / model.sample_rate, w.bytes_written)
            for (_, out), a, w in zip(pairs, audios, writers)]


@click.command("encode")
@click.argument("paths", nargs=-1, required=True, metavar="IN... [OUT.mimi]")
@click.option(
    "-o", "--output-dir", type=click.Path(file_okay=False), default=None,
    help="Write IN... to DIR/<name>.mimi (then every argument is an input).",
)
@click.option(
    "-q", "--codebooks", type=click.IntRange(1, 32), default=8, show_default=True,
    help="Codebooks per frame: 8 = 1.1 kbps, 32 = 4.4 kbps.",
)
@click.option("--batch-size", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Inputs encoded together on the model.")
@model_options
@common_options
def encode(
    paths: tuple[str, ...],
    output_dir: str | None,
    codebooks: int,
    batch_size: int,
    model_name: str | None,
    weights: str | None,
    config: str | None,
    device: str,
    force: bool,
    quiet: bool,
) -> None:
    """Compress audio (any format libsndfile reads, any rate) to .mimi files.

    \b
      mimi encode talk.wav talk.mimi
      mimi encode talk.wav talk.mimi --model small
      mimi encode a.wav b.flac c.mp3 -o codes/
      mimi encode talk.wav - | mimi decode - out.wav
    """
    from mimi_codec.audio import probe_audio

    pairs = plan_outputs(paths, output_dir)
    check_model_choice(model_name, weights, config)
    if pairs[0][1] == "-" and sys.stdout.isatty():
        fail("refusing to write binary .mimi data to a terminal: redirect stdout or give a file name")
    for src, out in pairs:  # check everything before loading the model
        if not is_stdio(out) and Path(out).exists() and not force:
            fail(f"output {out} already exists (use --force to overwrite)")
        if not is_stdio(src):
            with native_stderr_silenced():
                probe_audio(src)
    model, name = load_model(weights, config, device, codebooks, model_name)
    for start in range(0, len(pairs), batch_size):
        results = encode_files(model, name, pairs[start : start + batch_size], codebooks, force, quiet)
        for out, frames, seconds, size in results:
            where = "stdout" if is_stdio(out) else out
            say(quiet, f"wrote {where}: {frames} frames ({seconds:.2f} s), {codebooks} codebooks, "
                       f"{size:,} bytes ({size * 8 / max(seconds, 1e-9):,.0f} bit/s with header)")
