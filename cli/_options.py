"""Click options shared by the commands that load the Moshi models (`moshi serve`, `moshi chat`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

F = TypeVar("F", bound=Callable[..., object])

_FILE = click.Path(exists=True, dir_okay=False)


def model_file_options(fn: F) -> F:
    """Add --hf-repo, --mimi-weights/--mimi-config, --lm-weights/--lm-config, --tokenizer, --remote-url."""
    options = [
        click.option("--hf-repo", default=None, help="Hugging Face repo of the official model files."),
        click.option("--mimi-weights", type=_FILE, help="Local Mimi safetensors."),
        click.option("--mimi-config", type=_FILE, help="Local Mimi JSON config."),
        click.option("--lm-weights", type=_FILE, help="Local Moshi LM safetensors."),
        click.option("--lm-config", type=_FILE, help="Local Moshi LM JSON config."),
        click.option("--tokenizer", type=_FILE, help="Local SentencePiece model."),
        click.option("--remote-url", default=None, help="Remote backend: the server to relay to, e.g. ws://host:8998."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn
