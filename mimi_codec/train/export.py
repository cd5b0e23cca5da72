"""Export a trained model for shipping: smaller weights, same official layout.

Codebooks are rewritten with usage 1 and embedding_sum = centroid (the centroid a model
computes, embedding_sum / clamp(usage, 1e-5), is unchanged), which keeps the centroids exact
when the tensors are stored in half precision (usage counts can be large, sums then lose
digits). `load_mimi(..., dtype=torch.float32)` reads the file back in float32.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..checkpoint import save_mimi
from ..loaders import load_mimi
from ..models.mimi import MimiModel


@torch.no_grad()
def normalise_codebooks(model: MimiModel) -> None:
    """Set every codebook to usage 1 and embedding_sum = centroid (same centroids)."""
    for rvq in (model.quantizer.semantic, model.quantizer.acoustic):
        for cb in rvq.codebooks:
            centroid = cb.embedding.clone()
            cb.embedding_sum.copy_(centroid)
            cb.cluster_usage.fill_(1.0)


def export_for_shipping(weights: str | Path, config: str | Path, out_dir: str | Path,
                        dtype: torch.dtype = torch.float16) -> Path:
    """Write `out_dir/model.safetensors` (official layout, `dtype`) and `out_dir/config.json`.

    Args:
        weights: trained model (official layout, e.g. a run's model.safetensors).
        config: its config JSON.
        out_dir: target folder (e.g. mimi_codec/models_data/small).
        dtype: storage dtype of the tensors.
    Returns:
        the path of the written weights.
    """
    model = load_mimi(weights, config, num_codebooks=1)  # the default K does not go into the file
    normalise_codebooks(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_mimi(model.to(dtype), out / "model.safetensors")
    (out / "model.safetensors").chmod(0o644)  # safetensors writes 0600; an installed package file must be readable
    cfg = json.loads(Path(config).read_text(encoding="utf-8"))
    (out / "config.json").write_text(json.dumps(cfg, indent=1) + "\n", encoding="utf-8")
    return out / "model.safetensors"

