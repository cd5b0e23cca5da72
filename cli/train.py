"""`mimi train` (train or fine-tune a codec) and `mimi eval` (measure a codec's quality)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click
import numpy as np

from mimi_moshi_cli._app import fail


@click.command("train")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="Training config JSON (see docs/training.md).")
@click.option("--data", "data", required=True, multiple=True, metavar="DIR|FILE|MANIFEST",
              help="Training audio: folders (recursive), files, or .txt manifests. Repeatable.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Run folder: checkpoint, model.safetensors, config.json, metrics.jsonl.")
@click.option("--resume", is_flag=True, help="Continue from DIR/checkpoint.safetensors.")
@click.option("--init", "init_weights", default=None, type=click.Path(dir_okay=False), metavar="FILE",
              help="Fine-tune: start from these weights (overrides init_weights in the config).")
@click.option("--steps", type=int, default=None, help="Stop after this many steps of this call (resumable).")
@click.option("--device", default="cpu", show_default=True, help="Torch device (cpu, cuda, ...).")
@click.option("--threads", type=int, default=None,
              help="CPU threads for torch in this run (1 is fastest on a busy machine).")
@click.option("--quiet", is_flag=True, help="No progress display.")
def train(config_path: str, data: tuple[str, ...], out: str, resume: bool, init_weights: str | None,
          steps: int | None, device: str, threads: int | None, quiet: bool) -> None:
    """Train or fine-tune a Mimi codec; the result is DIR/model.safetensors in the official layout."""
    import dataclasses

    import torch

    from mimi_codec.train import TrainConfig, Trainer
    from mimi_codec.train.loop import CHECKPOINT_NAME

    cfg = TrainConfig.load(config_path)
    if init_weights is not None:
        cfg = dataclasses.replace(cfg, init_weights=init_weights)
    ckpt = Path(out) / CHECKPOINT_NAME
    if ckpt.exists() and not resume:
        fail(f"{ckpt} exists: pass --resume to continue that run, or choose another --out")
    if resume and not ckpt.exists():
        fail(f"--resume: {ckpt} does not exist")
    if steps is not None and steps < 1:
        fail(f"--steps {steps}: expected a positive number")
    if threads is not None:
        if threads < 1:
            fail(f"--threads {threads}: expected a positive number")
        torch.set_num_threads(threads)
    trainer = Trainer(cfg, list(data), out, device=device)
    if resume:
        trainer.load_state(ckpt)
    end = cfg.steps if steps is None else min(cfg.steps, trainer.step + steps)
    if trainer.step >= end:
        fail(f"nothing to do: the run is at step {trainer.step} of {cfg.steps}")
    if quiet:
        trainer.run(max_steps=end - trainer.step)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    console.print(f"{len(trainer.data.files)} files, {trainer.data.total_seconds / 60:.1f} min of audio; "
                  f"{sum(p.numel() for p in trainer.model.parameters()) / 1e6:.2f} M parameters; "
                  f"step {trainer.step} -> {end}")
    with Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                  TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("train", total=end, completed=trainer.step, info="")

        def show(step: int, m: dict[str, float]) -> None:
            info = f"mel {m['mel']:.3f}  wav {m['waveform']:.4f}  commit {m['commitment']:.3f}  ppl {m['perplexity']:.0f}"
            bar.update(task, completed=step, info=info)

        trainer.run(callback=show, max_steps=end - trainer.step)
    console.print(f"saved {Path(out) / 'model.safetensors'} at step {trainer.step}")


def _load_eval_model(model: str | None, weights: str | None, config: str | None, device: str,
                     num_codebooks: int) -> tuple[Any, str]:
    from mimi_codec import load_mimi

    from mimi_moshi_cli.mimi_common import check_model_choice

    check_model_choice(model, weights, config)
    if weights is not None and not Path(weights).is_file():
        fail(f"weights file {weights} does not exist")
    name = f"mimi:{model}" if model else f"mimi:{Path(weights).name}" if weights else "mimi:official"
    return load_mimi(weights=weights, config=config, device=device, num_codebooks=num_codebooks,
                     model=model), name


@click.command("eval")
@click.option("--data", "data", required=True, multiple=True, metavar="DIR|FILE|MANIFEST",
              help="Reference recordings (folders, files, .txt manifests). Repeatable.")
@click.option("--model", default=None, help="A model shipped in the package (e.g. small).")
@click.option("--weights", default=None, type=click.Path(dir_okay=False), metavar="FILE",
              help="Local safetensors checkpoint (default: the official one).")
@click.option("--config", default=None, metavar="FILE|PRESET", help="Model config for --weights.")
@click.option("-q", "--codebooks", "num_codebooks", type=int, default=8, show_default=True,
              help="Codebooks to encode with.")
@click.option("--baselines", is_flag=True, help="Also score Codec2 1200 bit/s and Opus 6 kbit/s.")
@click.option("--no-visqol", is_flag=True, help="Skip ViSQOL (the slowest metric).")
@click.option("--transcripts", default=None, type=click.Path(dir_okay=False), metavar="FILE",
              help="id|text lines (LJSpeech metadata.csv) or id<TAB>text: adds WER (PocketSphinx) of the "
                   "original and of each codec's output.")
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False), metavar="FILE",
              help="Write every score to this JSON file.")
@click.option("--device", default="cpu", show_default=True, help="Torch device.")
def evaluate(data: tuple[str, ...], model: str | None, weights: str | None, config: str | None,
             num_codebooks: int, baselines: bool, no_visqol: bool, transcripts: str | None, json_out: str | None,
             device: str) -> None:
    """Score a codec on recordings: PESQ (wideband), STOI, ViSQOL (speech), mel distance, bitrate."""
    from rich.console import Console
    from rich.table import Table

    from mimi_codec.audio import load_audio
    from mimi_codec.train.data import find_audio
    from mimi_codec.train.evaluate import (
        codec2_roundtrip,
        mimi_roundtrip,
        opus_roundtrip,
        quality,
        read_transcripts,
        transcribe,
        word_error_rate,
    )

    texts = read_transcripts(transcripts) if transcripts is not None else {}
    if texts and transcribe(np.zeros(1600, dtype=np.float32)) is None:
        fail("--transcripts needs the pocketsphinx package (pip install pocketsphinx)")

    codec, name = _load_eval_model(model, weights, config, device, num_codebooks)
    bits = math.log2(codec.cardinality)
    systems: dict[str, tuple[Any, float]] = {
        name: (lambda x: mimi_roundtrip(codec, x, num_codebooks), num_codebooks * bits * codec.frame_rate)}
    if baselines:
        systems["codec2-1200"] = (codec2_roundtrip, 1200.0)
        systems["opus-6k"] = (opus_roundtrip, 6000.0)
    rows: list[dict[str, Any]] = []
    for path in find_audio(list(data)):
        ref = load_audio(path).wav
        text = texts.get(path.stem)
        if text is not None:
            rows.append({"file": str(path), "system": "original", "bitrate": None, "pesq": None, "stoi": None,
                         "visqol": None, "mel_distance": None, "wer": word_error_rate(text, transcribe(ref) or "")})
        for sysname, (fn, bitrate) in systems.items():
            out = fn(ref)
            q = quality(ref, out, visqol=not no_visqol)
            wer = word_error_rate(text, transcribe(out) or "") if text is not None else None
            rows.append({"file": str(path), "system": sysname, "bitrate": bitrate, **q.__dict__, "wer": wer})
    table = Table(title="codec quality (mean over files)")
    for col in ("system", "bit/s", "PESQ-wb", "STOI", "ViSQOL", "mel dist", "WER", "files"):
        table.add_column(col, justify="right" if col != "system" else "left")
    summary = {}
    names = (["original"] if texts else []) + list(systems)
    for sysname in names:
        bitrate = systems[sysname][1] if sysname in systems else None
        mine = [r for r in rows if r["system"] == sysname]

        def mean(key: str) -> float | None:
            vals = [r[key] for r in mine if r[key] is not None]
            return sum(vals) / len(vals) if vals else None

        keys = ("pesq", "stoi", "visqol", "mel_distance", "wer")
        s = {k: mean(k) for k in keys}
        summary[sysname] = {"bitrate": bitrate, **s, "files": len(mine)}
        table.add_row(sysname, "-" if bitrate is None else f"{bitrate:.0f}",
                      *(("-" if s[k] is None else f"{s[k]:.3f}") for k in keys), str(len(mine)))
    Console().print(table)
    if json_out is not None:
        Path(json_out).write_text(json.dumps({"summary": summary, "files": rows}, indent=1) + "\n", encoding="utf-8")
