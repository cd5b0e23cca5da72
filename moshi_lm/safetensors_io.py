"""Tensor-at-a-time safetensors reading and writing.

`safetensors.torch.load_file` materialises a whole checkpoint, and `safe_open` maps the file
so its pages count as resident memory while they are read; for a 15 GB LM either may double
the peak memory. Here the header is parsed once and each tensor is read with `readinto`
straight into its destination (or into one temporary of that tensor's size when the dtype or
device differs), so loading costs the model's own memory plus one tensor. Writing streams
tensors one by one after a header computed from their shapes.

Format (https://github.com/huggingface/safetensors): u64 little-endian header length, a JSON
header {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}, then
the raw little-endian data.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
NAMES: dict[torch.dtype, str] = {v: k for k, v in DTYPES.items()}


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lies in a safetensors file."""

    name: str  # tensor name
    dtype: torch.dtype  # stored dtype
    shape: tuple[int, ...]  # stored shape
    begin: int  # absolute byte offset of the data in the file
    nbytes: int  # data size in bytes


def read_header(path: str | os.PathLike[str]) -> dict[str, TensorInfo]:
    """Parse the header of a safetensors file.

    Args:
        path: the file.
    Raises:
        ValueError: the file is not a valid safetensors file.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: too short for a safetensors file ({size} bytes)")
        (hlen,) = struct.unpack("<Q", raw)
        if hlen > size - 8:
            raise ValueError(f"{path}: header length {hlen} exceeds the file size {size}")
        try:
            header = json.loads(f.read(hlen))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: bad safetensors header ({e})") from e
    infos = {}
    base = 8 + hlen
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] not in DTYPES:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {meta['dtype']}")
        begin, end = meta["data_offsets"]
        if base + end > size:
            raise ValueError(f"{path}: tensor {name} runs past the end of the file")
        infos[name] = TensorInfo(name, DTYPES[meta["dtype"]], tuple(meta["shape"]), base + begin, end - begin)
    return infos


def _read_into(f, info: TensorInfo, out: torch.Tensor) -> None:
    """Read the raw bytes of `info` into the CPU contiguous tensor `out` of the stored dtype."""
    f.seek(info.begin)
    view = memoryview(out.reshape(-1).view(torch.uint8).numpy()).cast("B") if out.numel() else memoryview(b"")
    got = f.readinto(view) if out.numel() else 0
    if got != info.nbytes:
        raise ValueError(f"tensor {info.name}: short read ({got} of {info.nbytes} bytes)")


def read_tensor(f, info: TensorInfo) -> torch.Tensor:
    """Read one tensor (CPU, stored dtype) from an open binary file."""
    out = torch.empty(info.shape, dtype=info.dtype)
    if out.numel() * out.element_size() != info.nbytes:
        raise ValueError(f"tensor {info.name}: {info.nbytes} bytes do not hold {info.shape} {info.dtype}")
    _read_into(f, info, out)
    return out


def read_tensor_into(f, info: TensorInfo, target: torch.Tensor) -> None:
    """Fill `target` (any device/dtype, same shape) with the tensor, avoiding copies when possible."""
    if tuple(target.shape) != info.shape:
        raise ValueError(f"tensor {info.name}: shape {info.shape} in the file, expected {tuple(target.shape)}")
    if target.device.type == "cpu" and target.dtype == info.dtype and target.is_contiguous():
        _read_into(f, info, target)
    else:
        target.copy_(read_tensor(f, info))


def iter_tensors(path: str | os.PathLike[str]) -> Iterable[tuple[str, torch.Tensor]]:
    """Yield (name, CPU tensor) one at a time, in file order."""
    infos = sorted(read_header(path).values(), key=lambda i: i.begin)
    with open(path, "rb") as f:
        for info in infos:
            yield info.name, read_tensor(f, info)


def write_streaming(path: str | os.PathLike[str], specs: list[tuple[str, torch.dtype, tuple[int, ...]]],
                    produce: Callable[[str], torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file tensor by tensor.

    Args:
        path: output file.
        specs: (name, dtype, shape) of every tensor, in the order they are written.
        produce: called once per name, in order; returns the CPU tensor to write.
        metadata: optional string metadata.
    """
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, dtype, shape in specs:
        n = 1
        for s in shape:
            n *= s
        nbytes = n * torch.empty((), dtype=dtype).element_size()
        header[name] = {"dtype": NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name, dtype, shape in specs:
            t = produce(name).detach().to("cpu").contiguous()
            if t.dtype != dtype or tuple(t.shape) != tuple(shape):
                raise ValueError(f"tensor {name}: produced {t.dtype} {tuple(t.shape)}, announced {dtype} {shape}")
            if t.numel():
                f.write(memoryview(t.reshape(-1).view(torch.uint8).numpy()).cast("B"))
