"""`mimi`: compress speech to 1.1 kbps `.mimi` files and back."""

from __future__ import annotations

import click

from mimi_moshi_cli._app import AppGroup

LAZY_COMMANDS: dict[str, str] = {
    "encode": "mimi_moshi_cli.mimi_encode:encode",
    "decode": "mimi_moshi_cli.mimi_decode:decode",
    "roundtrip": "mimi_moshi_cli.mimi_decode:roundtrip",
    "info": "mimi_moshi_cli.mimi_info:info",
    "bench": "mimi_moshi_cli.bench:bench",
    "train": "mimi_moshi_cli.train:train",
    "eval": "mimi_moshi_cli.train:evaluate",
}


@click.group(cls=AppGroup, lazy_commands=LAZY_COMMANDS)
@click.version_option(package_name="mimi-moshi")
def main() -> None:
    """Mimi neural speech codec: 24 kHz speech <-> 12.5 frames/s of 11-bit tokens."""
