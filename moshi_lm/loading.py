"""Load Moshi LM checkpoints in the official layout (bf16 `model.safetensors` or int8
`model.q8.safetensors`) from a local file or a Hugging Face repository.

The module tree mirrors the official names except for one entry, listed in `RENAMES`:
the attention input projection is stored as `self_attn.in_proj_weight` ([steps*3*D, D]),
here a `StackedLinear` named `self_attn.in_proj`. Int8 checkpoints add `<weight>_scb`
(fp32 per-row absmax) beside each quantized linear weight.

Loading is strict (every name present, none extra, shapes equal) and goes straight to the
target device and dtype: the model is built on the `meta` device, allocated empty, and each
tensor is read from the file into its parameter (see `safetensors_io`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .config import LMConfig, as_config, split_repo_config
from .models.layers import StackedLinear
from .models.lm import LMModel
from .safetensors_io import read_header, read_tensor_into

DEFAULT_REPO = "kyutai/moshiko-pytorch-bf16"  # the official Moshi (male voice) bf16 repository
MOSHI_NAME = "model.safetensors"  # bf16 LM weights in the official repositories
MOSHI_Q8_NAME = "model.q8.safetensors"  # int8 LM weights in the official q8 repositories
MIMI_NAME = "tokenizer-e351c8d8-checkpoint125.safetensors"  # Mimi weights in the official repositories
TOKENIZER_NAME = "tokenizer_spm_32k_3.model"  # SentencePiece text tokenizer in the official repositories

#: Official name suffix -> name in this module tree (the only place the two layouts differ).
RENAMES: dict[str, str] = {
    "self_attn.in_proj_weight": "self_attn.in_proj.weight",
    "self_attn.in_proj_weight_scb": "self_attn.in_proj.weight_scb",
}
_REVERSE = {v: k for k, v in RENAMES.items()}


def to_module_name(name: str) -> str:
    """Official checkpoint name -> parameter name of `LMModel`."""
    for old, new in RENAMES.items():
        if name.endswith(old):
            return name[: -len(old)] + new
    return name


def to_official_name(name: str) -> str:
    """Parameter name of `LMModel` -> official checkpoint name."""
    for new, old in _REVERSE.items():
        if name.endswith(new):
            return name[: -len(new)] + old
    return name


def official_state_dict(model: LMModel) -> dict[str, torch.Tensor]:
    """The model's parameters under their official names (shares storage)."""
    return {to_official_name(k): v for k, v in model.state_dict(keep_vars=True).items()}


def quantizable_linears(model: LMModel) -> dict[str, StackedLinear]:
    """Official weight name -> linear layer, for every linear the official q8 stores as int8.

    The official int8 model quantizes every linear layer (attention projections, gated
    feed-forwards, text head, depformer input projections, audio heads); embeddings and
    norms stay in floating point.
    """
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, StackedLinear):
            out[to_official_name(f"{name}.weight")] = module
    return out


def _check_names(path: str | os.PathLike[str], expected: dict[str, tuple[int, ...]],
                 found: dict[str, tuple[int, ...]]) -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(n for n in set(expected) & set(found) if tuple(expected[n]) != tuple(found[n]))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: {missing}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {unexpected}")
        if wrong:
            parts.append("wrong shape: " + ", ".join(f"{n} {found[n]} (expected {expected[n]})" for n in wrong))
        raise ValueError(f"checkpoint {path} does not match the LM config; " + "; ".join(parts))


def load_lm_file(path: str | os.PathLike[str], config: LMConfig, device: torch.device | str = "cpu",
                 dtype: torch.dtype | None = None) -> LMModel:
    """Load a local checkpoint (float or int8 layout) into a new `LMModel`.

    Args:
        path: a `.safetensors` file in the official layout.
        config: the LM hyper-parameters.
        device: target device.
        dtype: float dtype of the model; None keeps the checkpoint's (its text embedding's).
    Raises:
        ValueError: names, shapes or dtypes that do not fit the config (all listed).
    """
    infos = read_header(path)
    if dtype is None:
        dtype = infos["text_emb.weight"].dtype if "text_emb.weight" in infos else torch.float32
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    model = LMModel(config, device="meta", dtype=dtype)
    for name, linear in quantizable_linears(model).items():
        if name + "_scb" in infos:
            linear.quantize_()
    params = official_state_dict(model)
    _check_names(path, {k: tuple(v.shape) for k, v in params.items()}, {k: v.shape for k, v in infos.items()})
    for name, p in params.items():
        stored = infos[name].dtype
        if p.dtype == torch.int8 and stored != torch.int8:
            raise ValueError(f"checkpoint {path}: {name} is {stored}, expected int8 beside {name}_scb")
        if p.dtype != torch.int8 and not stored.is_floating_point:
            raise ValueError(f"checkpoint {path}: {name} is {stored}, expected a floating dtype")
    model.to_empty(device=device)
    params = official_state_dict(model)
    with torch.no_grad(), open(path, "rb") as f:
        for info in sorted(infos.values(), key=lambda i: i.begin):
            read_tensor_into(f, info, params[info.name].data)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def hf_download(repo: str, filename: str) -> Path:
    """Fetch `filename` from the Hugging Face repository `repo` (cached by huggingface_hub)."""
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo, filename))


def hf_repo_config(repo: str) -> dict[str, Any] | None:
    """The repository's `config.json`, or None when it has none (the original Moshi repos)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        path = hf_hub_download(repo, "config.json")
    except EntryNotFoundError:
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def resolve_repo_files(hf_repo: str) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(LM config dict or None, repository keys) of a Hugging Face repository.

    The repository keys are those of `config.REPO_KEYS` (file names, `lm_gen_config`, ...); the
    file names default to the original layout: `model.safetensors`,
    `tokenizer-e351c8d8-checkpoint125.safetensors`, `tokenizer_spm_32k_3.model`.
    """
    raw = hf_repo_config(hf_repo)
    files: dict[str, Any] = {"moshi_name": MOSHI_NAME, "mimi_name": MIMI_NAME, "tokenizer_name": TOKENIZER_NAME}
    if raw is None:
        return None, files
    lm, repo = split_repo_config(raw)
    files.update({k: v for k, v in repo.items() if v is not None})
    return lm, files


def load_lm(weights: str | os.PathLike[str] | None = None,
            config: LMConfig | dict[str, Any] | str | os.PathLike[str] | None = None,
            device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
            hf_repo: str = DEFAULT_REPO) -> LMModel:
    """Load the Moshi LM.

    Args:
        weights: a local `.safetensors` path (bf16/fp32 or int8 `*.q8.safetensors` layout), or
            None to fetch the repository's LM weights from Hugging Face.
        config: `LMConfig`, official dict, or JSON path; None = the repository's `config.json`
            when fetching (Moshi 7B when it has none), Moshi 7B for a local file.
        device: target device.
        dtype: float dtype; None keeps the checkpoint's.
        hf_repo: repository used when `weights` is None.
    Returns:
        The model in eval mode, without gradients.
    """
    if weights is None:
        repo_cfg, files = resolve_repo_files(hf_repo)
        if config is None:
            config = repo_cfg
        weights = hf_download(hf_repo, files["moshi_name"])
    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"LM weights {weights} not found")
    return load_lm_file(weights, as_config(config), device=device, dtype=dtype)
