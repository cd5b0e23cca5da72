"""Codec speed with the full-size Mimi architecture (random weights, fixed seed), fp32 on CPU.

    pytest benchmarks/test_bench_codec.py --benchmark-only

Whole-file: encode / decode of 10 s of audio. Streaming: one 80 ms frame (1920 samples)
through an open stream, encode and decode separately (real time needs encode + decode < 80 ms).
"""

from __future__ import annotations

from typing import Iterator

import pytest
import torch

from mimi_codec import MimiModel

SECONDS = 10


@pytest.fixture(scope="module")
def model() -> MimiModel:
    torch.manual_seed(0)
    return MimiModel().eval()


@pytest.fixture(scope="module")
def wav() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, 1, 24000 * SECONDS, generator=g) * 0.1


@pytest.fixture(scope="module")
def codes(model: MimiModel, wav: torch.Tensor) -> torch.Tensor:
    return model.encode(wav)


def test_encode_10s(benchmark, model: MimiModel, wav: torch.Tensor) -> None:
    codes = benchmark.pedantic(model.encode, args=(wav,), rounds=3, warmup_rounds=1)
    assert codes.shape == (1, 8, 125)


def test_decode_10s(benchmark, model: MimiModel, codes: torch.Tensor) -> None:
    audio = benchmark.pedantic(model.decode, args=(codes,), rounds=3, warmup_rounds=1)
    assert audio.shape == (1, 1, 24000 * SECONDS)


@pytest.fixture
def stream(model: MimiModel) -> Iterator[MimiModel]:
    with model.streaming(1):
        yield model


def test_stream_encode_frame(benchmark, stream: MimiModel, wav: torch.Tensor) -> None:
    frames = iter(range(10**9))

    def one() -> torch.Tensor:
        i = next(frames) % 125
        return stream.encode(wav[..., i * 1920: (i + 1) * 1920])

    codes = benchmark.pedantic(one, rounds=40, warmup_rounds=5)
    assert codes.shape == (1, 8, 1)


def test_stream_decode_frame(benchmark, stream: MimiModel, codes: torch.Tensor) -> None:
    frames = iter(range(10**9))

    def one() -> torch.Tensor:
        i = next(frames) % 125
        return stream.decode(codes[..., i: i + 1])

    audio = benchmark.pedantic(one, rounds=40, warmup_rounds=5)
    assert audio.shape == (1, 1, 1920)
