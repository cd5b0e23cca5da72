"""Models that ship inside the package, by name: `load_mimi(model="small")`, `--model small`.

Each named model is a folder under `mimi_codec/models_data/` holding `model.safetensors`
(official layout) and `config.json` (official schema). Nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).parent / "models_data"


@dataclass(frozen=True)
class NamedModel:
    """A model shipped in the package."""

    name: str  # the name users give (`--model NAME`)
    weights: Path  # safetensors in the official layout
    config: Path  # config JSON in the official schema
    model_id: str  # what `.mimi` headers write in their "model" field


def _shipped() -> dict[str, NamedModel]:
    out = {}
    if DATA_DIR.is_dir():
        for d in sorted(DATA_DIR.iterdir()):
            w, c = d / "model.safetensors", d / "config.json"
            if w.is_file() and c.is_file():
                out[d.name] = NamedModel(d.name, w, c, f"mimi-codec:{d.name}")
    return out


def named_models() -> dict[str, NamedModel]:
    """Every model shipped in this installation, by name."""
    return _shipped()


def named_model(name: str) -> NamedModel:
    """The shipped model called `name`.

    Raises:
        ValueError: no such model (the message lists the shipped ones).
    """
    models = _shipped()
    if name not in models:
        raise ValueError(f"model {name!r}: no such model in this package; shipped models: {sorted(models) or 'none'}")
    return models[name]


def model_for_id(model_id: str) -> NamedModel | None:
    """The shipped model whose `.mimi` header id is `model_id` (None if none is)."""
    for m in _shipped().values():
        if m.model_id == model_id:
            return m
    return None
