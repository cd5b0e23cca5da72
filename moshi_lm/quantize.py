"""Int8 weight quantization in the layout of the official `model.q8.safetensors`.

Every linear weight of the LM (attention projections, gated feed-forwards, text head,
depformer input projections, audio heads; not embeddings or norms) is stored as
`<name>` int8 [rows, in] plus `<name>_scb` float32 [rows], the per-row absolute maximum,
with weight = int8 * scb / 127 (bitsandbytes' vector-wise int8 layout, used here without
bitsandbytes). Other tensors are copied unchanged.
"""

from __future__ import annotations

import os
import re

import torch

from .safetensors_io import read_header, read_tensor, write_streaming

#: Official names of the linear weights that the int8 layout stores quantized.
_QUANTIZED = re.compile(
    r"(^|\.)(self_attn\.in_proj_weight|self_attn\.out_proj\.weight|linear_in\.weight|linear_out\.weight)$"
    r"|^(text_linear|depformer_in\.\d+|linears\.\d+|extra_heads\.\d+)\.weight$"
)


def is_quantized_name(name: str) -> bool:
    """Whether the official int8 layout stores tensor `name` as int8 + `_scb`."""
    return _QUANTIZED.search(name) is not None


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise absmax int8 quantization.

    Args:
        weight: [rows, in] float.
    Returns:
        (int8 [rows, in], scb float32 [rows]) with weight ~= int8 * scb / 127.
    """
    if weight.dim() != 2 or not weight.dtype.is_floating_point:
        raise ValueError(f"expected a 2-D float weight, got {tuple(weight.shape)} {weight.dtype}")
    w = weight.float()
    scb = w.abs().amax(dim=1)
    q = torch.round(w * (127.0 / scb.clamp(min=1e-30))[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scb


def dequantize_weight(q: torch.Tensor, scb: torch.Tensor) -> torch.Tensor:
    """Inverse of `quantize_weight`: [rows, in] float32."""
    return q.float() * (scb.float() / 127.0)[:, None]


def quantize_checkpoint(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> dict[str, int]:
    """Write the int8 layout of a float LM checkpoint, one tensor at a time.

    Args:
        src: float `.safetensors` in the official layout.
        dst: output path (overwritten).
    Returns:
        {"quantized": n tensors made int8, "copied": n tensors copied, "bytes_in": ..., "bytes_out": ...}.
    Raises:
        ValueError: `src` is already quantized or has no quantizable weight.
    """
    infos = read_header(src)
    if any(name.endswith("_scb") for name in infos):
        raise ValueError(f"{src} is already int8-quantized (it has *_scb tensors)")
    ordered = sorted(infos.values(), key=lambda i: i.begin)
    specs: list[tuple[str, torch.dtype, tuple[int, ...]]] = []
    quantized = 0
    for info in ordered:
        if is_quantized_name(info.name) and info.dtype.is_floating_point and len(info.shape) == 2:
            specs.append((info.name, torch.int8, info.shape))
            specs.append((info.name + "_scb", torch.float32, info.shape[:1]))
            quantized += 1
        else:
            specs.append((info.name, info.dtype, info.shape))
    if quantized == 0:
        raise ValueError(f"{src} has no linear weight to quantize (is it a Moshi LM checkpoint?)")
    to_quantize = {name[: -len("_scb")] for name, _, _ in specs if name.endswith("_scb")}
    pending: dict[str, torch.Tensor] = {}
    with open(src, "rb") as f:
        def produce(name: str) -> torch.Tensor:
            if name in pending:
                return pending.pop(name)
            tensor = read_tensor(f, infos[name])
            if name in to_quantize:
                q, scb = quantize_weight(tensor)
                pending[name + "_scb"] = scb
                return q
            return tensor

        write_streaming(dst, specs, produce, metadata={"format": "pt", "quantization": "int8-rowwise-absmax"})
    bytes_in = sum(i.nbytes for i in ordered)
    return {"quantized": quantized, "copied": len(ordered) - quantized, "bytes_in": bytes_in,
            "bytes_out": os.path.getsize(dst)}
