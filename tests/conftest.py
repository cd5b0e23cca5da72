"""Paths shared by every test folder. Test files need unique basenames across folders."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).parent
FIXTURES = TESTS / "fixtures"
DATA = TESTS / "data"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """Folder of golden vectors and tiny checkpoints (see fixtures/PROVENANCE.md)."""
    return FIXTURES


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Folder of real recordings (see data/PROVENANCE.md)."""
    return DATA
