"""`load_mimi`: build Mimi from a config and fill it from the official checkpoint, a model
shipped in the package (by name), or a local file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from .checkpoint import load_state, read_safetensors
from .config import MimiConfig
from .models.mimi import MimiModel
from .named_models import named_model

HF_REPO = "kyutai/moshiko-pytorch-bf16"
MIMI_FILENAME = "tokenizer-e351c8d8-checkpoint125.safetensors"


def fetch_official_weights() -> Path:
    """Download (or find in the Hugging Face cache) the official Mimi checkpoint.

    Returns:
        the local path of tokenizer-e351c8d8-checkpoint125.safetensors.
    Raises:
        OSError: when it can be neither downloaded nor found in the cache.
    """
    try:
        import huggingface_hub
    except ImportError as exc:  # pragma: no cover - it is a dependency
        raise OSError("huggingface_hub is not installed; install it or pass weights=PATH") from exc
    try:
        return Path(huggingface_hub.hf_hub_download(HF_REPO, MIMI_FILENAME))
    except Exception as exc:
        raise OSError(
            f"could not fetch {MIMI_FILENAME} from the Hugging Face repo {HF_REPO} ({exc}). "
            f"If you are offline, download that file elsewhere and pass its path: "
            f"load_mimi(weights='/path/to/{MIMI_FILENAME}') (or --weights PATH on the CLI)"
        ) from exc


def load_mimi(
    weights: str | Path | None = None,
    config: MimiConfig | Mapping[str, Any] | str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    num_codebooks: int = 8,
    model: str | None = None,
) -> MimiModel:
    """Build a Mimi model and load its weights (strictly).

    Args:
        weights: a local safetensors file, or None for the official checkpoint from Hugging Face.
        config: None (official), a MimiConfig, a dict in the official JSON schema, a preset
            name, or the path of such a JSON file.
        device: where the model lives.
        dtype: floating dtype of the parameters (float32 reproduces the reference).
        num_codebooks: default K returned by `encode`, 1..32 (at most the model's codebooks).
        model: the name of a model shipped in the package (`named_models()`, e.g. "small"):
            its weights and config, nothing downloaded. Not combined with weights or config.
    Returns:
        the model in eval mode.
    Raises:
        ValueError: an unknown model name (the message lists the shipped ones), or a model
            name given together with weights or config.
    """
    if model is not None:
        if weights is not None or config is not None:
            raise ValueError(f"model {model!r}: give either a model name or weights/config, not both")
        shipped = named_model(model)
        weights, config = shipped.weights, shipped.config
    cfg = MimiConfig.load(config)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype {dtype!r}: expected a floating torch dtype")
    path = fetch_official_weights() if weights is None else Path(weights)
    tensors = read_safetensors(path)
    with torch.device("meta"):  # no random init: every tensor comes from the file
        mimi = MimiModel(cfg, num_codebooks=num_codebooks)
    load_state(mimi, tensors, source=f"weights file {str(path)!r}", assign=True)
    del tensors
    return mimi.to(device=device, dtype=dtype).eval()
