"""`load_mimi`: build Mimi from a config and fill it from the official checkpoint, a model
shipped in the package (by name), or a local file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from .checkpoint import load_state, read_safetensors
from .config import MimiConfig
from .models.mimi import MimiModel
from .modules.huge_pages import MIN_BYTES, Arena
from .modules.huge_pages import available as huge_available
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
    with torch.device("meta"):  # no random init: every tensor comes from the file
        mimi = MimiModel(cfg, num_codebooks=num_codebooks)
    arena = _huge_arena_for(mimi, path, device, dtype)
    if arena is None:
        tensors = read_safetensors(path)
    else:  # the large weights read straight into huge pages, where `huge_pages` wants them
        tensors = read_safetensors(path, lambda dt, n: arena.allocate(n) if dt == dtype and n >= MIN_BYTES else None)
        mimi._huge_arena = arena  # the load hook's `move_weights` then finds them in place
    load_state(mimi, tensors, source=f"weights file {str(path)!r}", assign=True)
    del tensors
    return mimi.to(device=device, dtype=dtype).eval()


def _huge_arena_for(mimi: MimiModel, path: Path, device: str | torch.device, dtype: torch.dtype) -> Arena | None:
    """An arena as large as the file when the model's weights will live in huge pages (CPU,
    float32, the `huge_pages` speedup on and available), else None. Reading into it instead of
    memory-mapping the file, then copying, keeps the file's pages out of the process: loading
    the full-size checkpoint peaked at ~960 MB RSS that way (the mapped file's 384 MB stayed
    resident until the last small tensor viewing it went), ~600 MB this way."""
    if not (mimi.speedups.huge_pages and huge_available() and torch.device(device).type == "cpu"
            and dtype == torch.float32 and path.is_file()):
        return None
    return Arena(path.stat().st_size)
