"""What the `mimi` CLI tests share: the installed command, the tiny fixture model's options,
a process runner and the one-line-error check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from forkrun import run_command

MIMI = str(Path(sys.executable).with_name("mimi"))
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
WEIGHTS = ["--weights", str(FIXTURES / "mimi_tiny.safetensors"), "--config", str(FIXTURES / "mimi_tiny.json")]


# what a file command imports before it reads its arguments (no numba: file commands leave it out)
PRELOAD = ("torch", "soundfile", "soxr", "safetensors", "mimi_codec.models.mimi", "mimi_codec.loaders",
           "mimi_codec.named_models", "mimi_moshi_cli.mimi", "mimi_moshi_cli.mimi_encode",
           "mimi_moshi_cli.mimi_decode", "mimi_moshi_cli.mimi_info")


def run_mimi(*args: str, cwd: Path | None = None, input: bytes | None = None) -> subprocess.CompletedProcess:
    """Run `mimi ARGS...` as a user would, in a new process (forked from a warm interpreter, see
    tests/forkrun.py); stdout and stderr captured as bytes."""
    return run_command("mimi_moshi_cli.mimi:main", [MIMI, *args], PRELOAD, cwd=cwd, input=input)


def assert_fails(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2, one line on stderr ("error: ...") holding every fragment, no traceback.

    Returns:
        that line.
    """
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]
