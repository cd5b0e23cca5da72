"""Shared click plumbing: lazily imported subcommands and one-red-line errors.

Every command raises ordinary exceptions from the libraries; `AppGroup` turns the ones a
user can act on (bad values, missing files, corrupt streams) into a single red line on
stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, NoReturn

import click

#: Exception types that describe a problem with the user's input, not a bug.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, click.ClickException)


def fail(message: str) -> NoReturn:
    """Print `message` as one red line on stderr and exit with code 2."""
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]error:[/] {message}", markup=True)
    sys.exit(2)


class AppGroup(click.Group):
    """A click group whose subcommands live in their own modules, imported on first use.

    Args:
        lazy_commands: command name -> "module:attribute" of a `click.Command`.
    """

    def __init__(self, *args: Any, lazy_commands: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy_commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_commands:
            module_name, attr = self.lazy_commands[cmd_name].split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.exceptions.Exit:
            raise
        except click.ClickException as e:
            if isinstance(e, click.UsageError):
                raise
            fail(e.format_message())
        except KeyboardInterrupt:
            fail("interrupted")
        except USER_ERRORS as e:
            fail(str(e) or type(e).__name__)
