"""`moshi`: full-duplex voice dialogue with the Moshi speech LM."""

from __future__ import annotations

import click

from mimi_moshi_cli._app import AppGroup

LAZY_COMMANDS: dict[str, str] = {
    "quantize": "mimi_moshi_cli.quantize:quantize",
    "serve": "mimi_moshi_cli.serve:serve",
    "chat": "mimi_moshi_cli.chat:chat",
}


@click.group(cls=AppGroup, lazy_commands=LAZY_COMMANDS)
@click.version_option(package_name="mimi-moshi")
def main() -> None:
    """Moshi full-duplex speech LM: serve it, chat with it, quantize it."""
