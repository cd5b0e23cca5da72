"""Fixtures shared by the speedup tests."""

from __future__ import annotations

from typing import Iterator

import pytest
import torch


@pytest.fixture(params=[1, 2], ids=["serial-kernel", "parallel-kernel"])
def threads(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run with 1 torch thread (the numba kernels' serial build) and with 2 (their parallel
    one), restoring torch's thread count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)
