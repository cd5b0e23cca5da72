"""Paths shared by every test folder, and the `background` marker. Test files need unique
basenames across folders."""

from __future__ import annotations

import subprocess
import sys
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


_BACKGROUND = pytest.StashKey[subprocess.Popen]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `background` go last (keeping their order), so that their processes, started
    when collection ends, run beside every other test before they are waited for."""
    items.sort(key=lambda item: item.get_closest_marker("background") is not None)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the process of each selected test marked `background(script, *args)`:
    `python -c script args...`."""
    if session.config.option.collectonly:
        return
    for item in session.items:
        marker = item.get_closest_marker("background")
        if marker is not None:
            item.stash[_BACKGROUND] = subprocess.Popen([sys.executable, "-c", *marker.args], stdout=subprocess.PIPE,
                                                       stderr=subprocess.PIPE, text=True)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Kill what is left of the background processes (the run stopped before their tests)."""
    for item in session.items:
        proc = item.stash.get(_BACKGROUND, None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.fixture
def background_output(request: pytest.FixtureRequest) -> str:
    """What the process of this test's `background(script, *args)` marker printed on stdout;
    waits for it to end, and fails the test (showing its stderr) if it did not exit with 0."""
    proc = request.node.stash[_BACKGROUND]
    stdout, stderr = proc.communicate(timeout=1800)
    assert proc.returncode == 0, stderr
    return stdout
