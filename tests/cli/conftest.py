"""Fixtures of the `mimi` CLI tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf


@pytest.fixture(scope="module")
def speech(tmp_path_factory, data_dir) -> Path:
    """3 s of real speech (VCTK p240) as a 24 kHz wav."""
    wav, rate = sf.read(data_dir / "p240_00000.mp3", dtype="float32")
    path = tmp_path_factory.mktemp("in") / "speech.wav"
    sf.write(path, wav[: 3 * rate], rate)
    return path
