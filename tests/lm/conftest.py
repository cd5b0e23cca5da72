"""Fixtures of the LM tests: the tiny fixture LM and its golden vectors (one per test module)."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

from moshi_lm import load_lm


@pytest.fixture(scope="module")
def tiny(fixtures_dir):
    """The tiny random-weight Moshi LM of tests/fixtures, fresh for each test module."""
    return load_lm(fixtures_dir / "moshi_tiny.safetensors", fixtures_dir / "moshi_tiny.json")


@pytest.fixture(scope="module")
def vectors(fixtures_dir):
    """Golden vectors made by the reference (see tests/fixtures/README.md)."""
    return load_file(fixtures_dir / "moshi_tiny_vectors.safetensors")
