"""`moshi quantize IN OUT`: int8 weights in the official `model.q8.safetensors` layout."""

from __future__ import annotations

import click

from mimi_moshi_cli._io import atomic_path


@click.command("quantize")
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite DST if it exists.")
def quantize(src: str, dst: str, force: bool) -> None:
    """Quantize a Moshi LM checkpoint SRC (bf16/fp32 .safetensors) to int8 DST.

    Every linear weight becomes int8 plus a per-row fp32 scale (`weight_scb`), as in the
    official model.q8.safetensors; embeddings and norms are copied. Loads with `load_lm`.
    """
    from moshi_lm.quantize import quantize_checkpoint

    with atomic_path(dst, force=force) as tmp:
        stats = quantize_checkpoint(src, tmp)
    click.echo(f"{dst}: {stats['quantized']} weights int8, {stats['copied']} tensors copied, "
               f"{stats['bytes_in'] / 2**20:.1f} MiB -> {stats['bytes_out'] / 2**20:.1f} MiB")
