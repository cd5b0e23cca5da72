"""benchmarks/ties.py tells a rounding-level tie from a real code disagreement."""

from __future__ import annotations

import sys
from pathlib import Path

from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from ties import mismatch_gaps  # noqa: E402

from mimi_codec import load_mimi  # noqa: E402


def test_mismatch_gaps_on_the_tiny_model(fixtures_dir) -> None:
    vectors = load_file(str(fixtures_dir / "mimi_tiny_vectors.safetensors"))
    model = load_mimi(fixtures_dir / "mimi_tiny.safetensors", fixtures_dir / "mimi_tiny.json")
    wav = vectors["wav"][..., : 10 * 1920]
    mine = model.encode(wav, num_codebooks=8).numpy()[0]
    assert mismatch_gaps(model, wav, mine, mine.copy()) == []
    for k in (0, 3):  # a semantic and an acoustic codebook
        other = mine.copy()
        other[k, 4] = (other[k, 4] + 1) % 2048
        other[k + 1:, 4] = 0  # later codebooks of a differing frame are not looked at
        gaps = mismatch_gaps(model, wav, mine, other)
        assert len(gaps) == 1 and gaps[0] > 1e-3  # another centroid: clearly farther, not a tie
