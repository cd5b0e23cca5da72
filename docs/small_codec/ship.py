"""Ship the small codec: export a trained run's weights into mimi_codec/models_data/small/.

Run from the repository root:

    python docs/small_codec/ship.py                       # training/small/out/model.safetensors
    python docs/small_codec/ship.py --weights runs/x/model.safetensors

The weights are first copied to a temporary file and read back in full, retrying while a
running trainer is rewriting them; then `export_for_shipping` writes `model.safetensors`
(float16, official layout, codebooks normalised) and `config.json` (docs/small_codec/model_config.json)
into the package, where `load_mimi(model="small")` and `mimi ... --model small` find them.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT / "training" / "small" / "out" / "model.safetensors"
CONFIG = ROOT / "docs" / "small_codec" / "model_config.json"
OUT = ROOT / "mimi_codec" / "models_data" / "small"


def stable_copy(src: Path, dst: Path, tries: int = 10, wait_s: float = 3.0) -> None:
    """Copy `src` to `dst` and check that the copy reads as a whole safetensors file."""
    from safetensors.numpy import load_file

    for attempt in range(tries):
        try:
            shutil.copyfile(src, dst)
            load_file(str(dst))  # a copy taken mid-write fails here
            return
        except Exception as exc:  # noqa: BLE001 - any failed read means "try again"
            if attempt == tries - 1:
                raise OSError(f"could not read a complete copy of {src} ({exc})") from exc
            time.sleep(wait_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=WEIGHTS, help="trained model (official layout, float32)")
    parser.add_argument("--config", type=Path, default=CONFIG, help="its config JSON (official schema)")
    parser.add_argument("--out", type=Path, default=OUT, help="target folder")
    args = parser.parse_args()

    from mimi_codec.train.export import export_for_shipping

    with tempfile.TemporaryDirectory(prefix="ship-small-") as tmp:
        copy = Path(tmp) / "model.safetensors"
        stable_copy(args.weights, copy)
        path = export_for_shipping(copy, args.config, args.out)
    print(f"wrote {path} ({path.stat().st_size:,} bytes) and {args.out / 'config.json'}")


if __name__ == "__main__":
    main()
