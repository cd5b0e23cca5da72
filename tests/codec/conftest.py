"""Fixtures of the codec tests: the tiny fixture model and its golden vectors (one per test module)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from mimi_codec import MimiModel, load_mimi


@pytest.fixture(scope="module")
def tiny(fixtures_dir) -> MimiModel:
    """The tiny random-weight Mimi of tests/fixtures, fresh for each test module."""
    return load_mimi(fixtures_dir / "mimi_tiny.safetensors", fixtures_dir / "mimi_tiny.json")


@pytest.fixture(scope="module")
def vectors(fixtures_dir) -> dict[str, torch.Tensor]:
    """Golden vectors made by the reference (see tests/fixtures/README.md)."""
    return load_file(str(fixtures_dir / "mimi_tiny_vectors.safetensors"))
