"""Official checkpoint layout <-> this package's module names, through one rename table.

Official names (those of tokenizer-e351c8d8-checkpoint125.safetensors) load as they are.
Also accepted: split attention names (`in_projs.0.weight`, `out_projs.0.weight`) and the
legacy codebook names (`embed_sum`, `embed_avg`, `cluster_size`, `inited`). Loading is
strict: any missing, unexpected or misshapen tensor is an error that names them all.
Only safetensors files are read or written.
"""

from __future__ import annotations

import json
import re
import struct
import sys
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .models.mimi import MimiModel

# (official name, our name). `{x}` matches one dotted component, `{rest}` the remaining ones.
RENAMES: list[tuple[str, str]] = [
    ("{side}.model.{i}.conv.conv.{p}", "{side}.model.{i}.{p}"),
    ("{side}.model.{i}.convtr.convtr.{p}", "{side}.model.{i}.{p}"),
    ("{side}.model.{i}.block.{j}.conv.conv.{p}", "{side}.model.{i}.block.{j}.{p}"),
    ("{side}.model.{i}.shortcut.conv.conv.{p}", "{side}.model.{i}.shortcut.{p}"),
    ("downsample.conv.conv.conv.weight", "downsample.weight"),
    ("upsample.convtr.convtr.convtr.weight", "upsample.weight"),
    ("{tr}.transformer.layers.{i}.self_attn.in_proj_weight", "{tr}.layers.{i}.self_attn.in_proj.weight"),
    ("{tr}.transformer.layers.{i}.{rest}", "{tr}.layers.{i}.{rest}"),
    ("{tr}.input_proj.weight", "{tr}.input_proj.weight"),
    ("{tr}.output_projs.0.weight", "{tr}.output_proj.weight"),
    ("quantizer.rvq_first.vq.layers.{i}._codebook.{b}", "quantizer.semantic.codebooks.{i}.{b}"),
    ("quantizer.rvq_rest.vq.layers.{i}._codebook.{b}", "quantizer.acoustic.codebooks.{i}.{b}"),
    ("quantizer.rvq_first.{proj}.weight", "quantizer.semantic.{proj}.weight"),
    ("quantizer.rvq_rest.{proj}.weight", "quantizer.acoustic.{proj}.weight"),
]

# Other spellings of official names: (alias suffix, official suffix).
ALIASES: list[tuple[str, str]] = [
    (".self_attn.in_projs.0.weight", ".self_attn.in_proj_weight"),
    (".self_attn.in_proj.weight", ".self_attn.in_proj_weight"),
    (".self_attn.out_projs.0.weight", ".self_attn.out_proj.weight"),
    ("._codebook.embed_sum", "._codebook.embedding_sum"),
    ("._codebook.embed_avg", "._codebook.embedding_sum"),
    ("._codebook.cluster_size", "._codebook.cluster_usage"),
    ("._codebook.inited", "._codebook._initialized"),
]


def _compile(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{\w+\})", template)
    out = []
    for part in parts:
        if part.startswith("{"):
            name = part[1:-1]
            out.append(f"(?P<{name}>.+)" if name == "rest" else f"(?P<{name}>[^.]+)")
        else:
            out.append(re.escape(part))
    return re.compile("".join(out) + r"\Z")


_FORWARD = [(_compile(a), b) for a, b in RENAMES]
_BACKWARD = [(_compile(b), a) for a, b in RENAMES]


def _apply(name: str, table: list[tuple[re.Pattern[str], str]]) -> str | None:
    for pattern, target in table:
        m = pattern.match(name)
        if m:
            return target.format(**m.groupdict())
    return None


def official_to_internal(name: str) -> str | None:
    """Our module name for an official (or alias) tensor name; None if it matches no rule."""
    for alias, official in ALIASES:
        if name.endswith(alias):
            name = name[: -len(alias)] + official
            break
    return _apply(name, _FORWARD)


def internal_to_official(name: str, model: MimiModel) -> str:
    """The official checkpoint name of one of `model`'s state-dict names."""
    owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    transposed = isinstance(owner, torch.nn.ConvTranspose1d)
    for pattern, target in _BACKWARD:
        m = pattern.match(name)
        if m and ("convtr" in target) == transposed:
            return target.format(**m.groupdict())
    raise AssertionError(f"no official name for {name}")


def official_state_dict(model: MimiModel) -> dict[str, torch.Tensor]:
    """The model's tensors under their official names (318 for the official architecture)."""
    return {internal_to_official(k, model): v for k, v in model.state_dict().items()}


def _fmt(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def load_state(model: MimiModel, tensors: Mapping[str, torch.Tensor], source: str = "checkpoint",
               assign: bool = False) -> None:
    """Load official-layout tensors into `model`, strictly.

    Args:
        model: the model to fill.
        tensors: name -> tensor, official names or the accepted aliases.
        source: how to name the origin in error messages.
        assign: take the given tensors as the model's (no copy; needed for a meta-device model).
    Raises:
        ValueError: listing missing, unexpected, duplicated or misshapen tensors.
    """
    expected = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    unexpected: list[str] = []
    duplicated: list[str] = []
    for name, tensor in tensors.items():
        internal = official_to_internal(name)
        if internal is None or internal not in expected:
            unexpected.append(name)
        elif internal in mapped:
            duplicated.append(f"{origin[internal]} / {name}")
        else:
            mapped[internal] = tensor
            origin[internal] = name
    missing = sorted(internal_to_official(k, model) for k in expected if k not in mapped)
    bad_shape = sorted(f"{origin[k]} {tuple(v.shape)} (expected {tuple(expected[k].shape)})"
                       for k, v in mapped.items() if tuple(v.shape) != tuple(expected[k].shape))
    problems = []
    if missing:
        problems.append(f"missing tensors: {_fmt(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {_fmt(sorted(unexpected))}")
    if duplicated:
        problems.append(f"tensors given twice: {_fmt(sorted(duplicated))}")
    if bad_shape:
        problems.append(f"wrong shapes: {_fmt(bad_shape)}")
    if problems:
        raise ValueError(f"{source} does not match the Mimi architecture; " + "; ".join(problems))
    model.load_state_dict(mapped, strict=True, assign=assign)


def read_safetensors(path: str | Path,
                     place: Callable[[torch.dtype, int], np.ndarray | None] | None = None) -> dict[str, torch.Tensor]:
    """Read every tensor of a safetensors file (on CPU).

    Args:
        path: the file.
        place: None: the tensors view the file, memory-mapped by safetensors (pages are read
            when first touched). Otherwise every tensor is read into memory of its own, with
            plain file reads: `place(dtype, nbytes)` may give a writable uint8 array of
            `nbytes` to read it into (e.g. in a huge-page arena), or None for ordinary memory.
            No part of the file stays mapped, so its pages never count in this process's RSS.
    Raises:
        ValueError: if the file is not safetensors (pickled .pt/.bin files are refused).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:  # validates the header
            if place is None:
                return {k: f.get_tensor(k) for k in f.keys()}
            names = set(f.keys())
        return _read_unmapped(path, names, place)
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise ValueError(f"weights file {str(path)!r} is not a readable safetensors file ({exc}); "
                         "only safetensors checkpoints are supported") from exc


_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


def _read_unmapped(path: Path, names: set[str],
                   place: Callable[[torch.dtype, int], np.ndarray | None]) -> dict[str, torch.Tensor]:
    """The tensors `names` of a safetensors file (its header already validated by safetensors),
    each read with readinto: 8 bytes of header size, the JSON header (name -> dtype, shape,
    data_offsets), then the data, little-endian."""
    if sys.byteorder != "little":
        raise ValueError("reading safetensors without mapping them needs a little-endian machine")
    out: dict[str, torch.Tensor] = {}
    with open(path, "rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(size))
        base = 8 + size
        for name in sorted(names, key=lambda n: header[n]["data_offsets"][0]):  # in file order
            info = header[name]
            dtype = _DTYPES[info["dtype"]]
            begin, end = info["data_offsets"]
            if end == begin:  # an empty tensor (a zero-size array cannot be viewed as another dtype)
                out[name] = torch.empty(info["shape"], dtype=dtype)
                continue
            buf = place(dtype, end - begin)
            if buf is None:
                buf = np.empty(end - begin, dtype=np.uint8)
            fh.seek(base + begin)
            if fh.readinto(memoryview(buf)) != end - begin:
                raise ValueError(f"tensor {name!r} is cut short")
            out[name] = torch.from_numpy(buf).view(dtype).reshape(info["shape"])
    return out


def save_mimi(model: MimiModel, path: str | Path) -> None:
    """Save the model's weights as safetensors in the official checkpoint layout.

    Args:
        model: the model to save.
        path: target file (overwritten).
    """
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in official_state_dict(model).items()}
    save_file(tensors, str(path), metadata={"format": "pt"})
