"""Training checkpoints in safetensors only: tensors flattened by name, the rest as JSON.

A checkpoint holds the model (official layout), its weights' EMA, the discriminator, both
AdamW states, the balancer and the step. Optimizer states are flattened into tensors named
`optim.<name>.<param index>.<key>`; their hyper-parameters (param groups) go to the JSON
metadata, so nothing is pickled and a checkpoint can be read by any safetensors reader.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

FORMAT = "mimi-train-v1"


def flatten_optimizer(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer's state dict into tensors and JSON.

    Args:
        opt: the optimizer.
        prefix: name prefix of its tensors.
    Returns:
        (tensors by name, JSON-ready dict of param groups and non-tensor state).
    """
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"{prefix}.{idx}.{key}"] = val.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def unflatten_optimizer(opt: torch.optim.Optimizer, prefix: str, tensors: dict[str, torch.Tensor],
                        meta: dict[str, Any]) -> None:
    """Load into `opt` what `flatten_optimizer` wrote.

    Raises:
        ValueError: the groups do not match the optimizer's parameters.
    """
    groups = meta["param_groups"]
    own = opt.state_dict()["param_groups"]
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in own]:
        raise ValueError(f"checkpoint optimizer {prefix!r} has parameter groups of sizes "
                         f"{[len(g['params']) for g in groups]}, the model needs "
                         f"{[len(g['params']) for g in own]}")
    state: dict[int, dict[str, Any]] = {}
    head = prefix + "."
    for name, val in tensors.items():
        if name.startswith(head):
            idx, key = name[len(head):].split(".", 1)
            state.setdefault(int(idx), {})[key] = val
    for idx, st in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(st)
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write tensors + JSON metadata atomically (temp file, then rename).

    Args:
        path: target .safetensors file.
        tensors: name -> tensor (copied to CPU, contiguous).
        meta: JSON-ready dict stored in the file's metadata.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    save_file(flat, str(tmp), metadata={"format": FORMAT, "meta": json.dumps(meta)})
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a training checkpoint.

    Returns:
        (tensors by name, metadata dict).
    Raises:
        ValueError: not a training checkpoint of this format.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"training checkpoint {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            md = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors' own error types
        raise ValueError(f"training checkpoint {path}: not a readable safetensors file ({exc})") from exc
    if md.get("format") != FORMAT:
        raise ValueError(f"training checkpoint {path}: format {md.get('format')!r}, expected {FORMAT!r}")
    return tensors, json.loads(md["meta"])
