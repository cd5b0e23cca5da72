"""Resume the small codec's training run from training/small/checkpoint.safetensors.

Run from the repository root (needs `pip install ./mimi_codec[train]` and Debian's espeak-ng):

    nice -n 19 python training/small/resume.py --minutes 60

It regenerates the synthetic espeak-ng clips (deterministic: docs/small_codec/gen_espeak.py),
writes the same 73-file manifest the run started with (held-out speakers p260, 8230 and
metavoice stay out), loads the checkpoint (model, codebooks, optimizer, EMA, step, RNG) and
trains on, checkpointing back into this folder every few minutes. The exported model lands in
training/small/out/model.safetensors; see docs/model_card_small.md.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
REAL = ["1320_00000.mp3", "3575_00000.mp3", "6829_00000.mp3", "bria.mp3", "p240_00000.mp3",
        *[f"ljspeech/LJ001-{i:04d}.flac" for i in range(1, 9)]]
SYNTHETIC = 60  # the run used the first 60 espeak-ng clips


def make_data() -> Path:
    """The run's training manifest, generating the espeak-ng clips when missing."""
    espeak = DATA / "espeak"
    if len(list(espeak.glob("es_*.wav"))) < SYNTHETIC:
        DATA.mkdir(parents=True, exist_ok=True)
        (DATA / "tests").mkdir(exist_ok=True)
        shutil.copytree(ROOT / "tests" / "data" / "ljspeech", DATA / "tests" / "data" / "ljspeech", dirs_exist_ok=True)
        subprocess.run([sys.executable, str(ROOT / "docs" / "small_codec" / "gen_espeak.py")], cwd=DATA, check=True)
    lines = [str(ROOT / "tests" / "data" / f) for f in REAL]
    lines += [str(espeak / f"es_{i:03d}.wav") for i in range(SYNTHETIC)]
    manifest = DATA / "train_manifest.txt"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="stop after about this long (checkpointed)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core machine)")
    args = parser.parse_args()

    import torch

    from mimi_codec.train import TrainConfig, Trainer

    torch.set_num_threads(args.threads)
    cfg = TrainConfig.load(ROOT / "docs" / "small_codec" / "train_config.json")
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    log = HERE / "metrics.jsonl"
    if log.exists() and not (out / "metrics.jsonl").exists():
        shutil.copyfile(log, out / "metrics.jsonl")  # the trainer appends to the run's history
    trainer = Trainer(cfg, [str(make_data())], out)
    ckpt = HERE / "checkpoint.safetensors"
    if ckpt.exists():
        trainer.load_state(ckpt)
    print("resuming at step", trainer.step, flush=True)
    deadline = time.monotonic() + args.minutes * 60
    while trainer.step < cfg.steps and time.monotonic() < deadline:
        trainer.run(max_steps=cfg.checkpoint_every)
        shutil.copyfile(out / "checkpoint.safetensors", ckpt)
        shutil.copyfile(out / "metrics.jsonl", log)
        print("step", trainer.step, "checkpointed", flush=True)


if __name__ == "__main__":
    main()
