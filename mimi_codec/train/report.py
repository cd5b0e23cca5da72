"""Quality against training steps: score a run's snapshots and the reference codecs on
held-out recordings, write a JSON table and a plot.

    python -m mimi_codec.train.report RUN_DIR --data held_out/ --out docs/
    python -m mimi_codec.train.report RUN_DIR --data held_out/ --out docs/ --every 20 \
        --min-step 2450 --merge docs/small_quality_vs_steps.json   # a resumed run's new steps
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..audio import load_audio
from ..loaders import load_mimi
from .data import find_audio
from .evaluate import codec2_roundtrip, mimi_roundtrip, opus_roundtrip, quality

METRICS = ("pesq", "stoi", "visqol", "mel_distance")


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(vals)) if vals else None


def score(fn: Any, refs: list[np.ndarray], visqol: bool) -> dict[str, float | None]:
    """Mean quality of a round-trip function over reference signals.

    Args:
        fn: [T] float 24 kHz -> decoded [T'] float 24 kHz.
        refs: reference signals.
        visqol: also compute ViSQOL.
    """
    rows = [quality(x, fn(x), visqol=visqol).__dict__ for x in refs]
    return {k: _mean(rows, k) for k in METRICS}


def _step(snapshot: Path) -> int:
    """The training step in a snapshot's name (model_step0001234.safetensors -> 1234)."""
    return int(re.findall(r"\d+", snapshot.stem)[-1])


def evaluate_run(run: Path, data: list[str], visqol: bool = True, every: int = 1,
                 min_step: int = 0) -> dict[str, Any]:
    """Score every snapshot of a run (and Codec2 1200 / Opus 6k) on held-out audio.

    Args:
        run: the run folder (with config.json and snapshots/).
        data: held-out recordings (folders, files, manifests).
        visqol: also compute ViSQOL.
        every: score one snapshot in `every` (the last one always).
        min_step: skip the snapshots of earlier steps.
    Returns:
        {"files": [...], "baselines": {name: scores}, "snapshots": [{"step": n, **scores}]}
    """
    files = find_audio(data)
    refs = [load_audio(f).wav for f in files]
    out: dict[str, Any] = {"files": [str(f) for f in files], "baselines": {}, "snapshots": []}
    out["baselines"]["codec2-1200"] = score(codec2_roundtrip, refs, visqol)
    out["baselines"]["opus-6k"] = score(opus_roundtrip, refs, visqol)
    snaps = [p for p in sorted((run / "snapshots").glob("model_step*.safetensors"))
             if _step(p) >= min_step]
    picked = snaps[::every] + ([snaps[-1]] if snaps and (len(snaps) - 1) % every else [])
    for snap in picked:
        step = _step(snap)
        model = load_mimi(snap, run / "config.json")
        out["snapshots"].append({"step": step, **score(lambda x: mimi_roundtrip(model, x), refs, visqol)})
    return out


def plot(results: dict[str, Any], path: Path, title: str) -> None:
    """PESQ and STOI of the snapshots against steps, baselines as horizontal lines (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    snaps = results["snapshots"]
    steps = [s["step"] for s in snaps]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key, label in zip(axes, ("pesq", "stoi", "visqol"), ("PESQ (wideband)", "STOI", "ViSQOL (speech)")):
        ys = [s[key] for s in snaps]
        if any(y is not None for y in ys):
            ax.plot(steps, [np.nan if y is None else y for y in ys], "o-", label="small Mimi (1.1 kbit/s)")
        for (name, sc), style in zip(results["baselines"].items(), ("--", ":")):
            if sc.get(key) is not None:
                ax.axhline(sc[key], linestyle=style, color="gray" if style == "--" else "black", label=name)
        ax.set_xlabel("training step")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """Command line: score a run's snapshots on held-out data; write JSON and PNG."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--data", nargs="+", required=True)
    p.add_argument("--out", type=Path, required=True, help="folder for quality_vs_steps.{json,png}")
    p.add_argument("--every", type=int, default=1)
    p.add_argument("--no-visqol", action="store_true")
    p.add_argument("--min-step", type=int, default=0, help="score only snapshots from this step on")
    p.add_argument("--merge", type=Path, default=None,
                   help="an earlier results JSON whose snapshot rows before --min-step are kept")
    a = p.parse_args(argv)
    res = evaluate_run(a.run, a.data, visqol=not a.no_visqol, every=a.every, min_step=a.min_step)
    if a.merge is not None:
        old = json.loads(a.merge.read_text(encoding="utf-8"))
        res["snapshots"] = [s for s in old["snapshots"] if s["step"] < a.min_step] + res["snapshots"]
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "small_quality_vs_steps.json").write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    plot(res, a.out / "small_quality_vs_steps.png", "held-out speech: small Mimi vs Codec2 1200 and Opus 6k")


if __name__ == "__main__":
    main()
