"""Bad input gives a ValueError that names the value and what was expected."""

from __future__ import annotations

import pytest
import torch

from mimi_codec import MimiModel, load_mimi


@pytest.mark.parametrize("wav, match", [
    (torch.zeros(1, 1920), r"shape \(1, 1920\): expected \[B, 1, T\]"),
    (torch.zeros(1, 2, 1920), r"shape \(1, 2, 1920\)"),
    (torch.zeros(1, 1, 1920, dtype=torch.int16), "dtype torch.int16"),
    ([0.0] * 1920, "expected a torch.Tensor"),
])
def test_bad_wav(tiny: MimiModel, wav, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tiny.encode(wav)


@pytest.mark.parametrize("k", [0, 33, -1, 2.0])
def test_bad_num_codebooks(tiny: MimiModel, k) -> None:
    with pytest.raises(ValueError, match=f"num_codebooks {k!r}: expected an int in 1..32"):
        tiny.encode(torch.zeros(1, 1, 1920), num_codebooks=k)


@pytest.mark.parametrize("codes, match", [
    (torch.full((1, 8, 2), 2048), "code value 2048: expected codes in 0..2047"),
    (torch.full((1, 8, 2), -3), "code value -3"),
    (torch.zeros(1, 33, 2, dtype=torch.long), "K=33 codebooks: expected 1..32"),
    (torch.zeros(1, 0, 2, dtype=torch.long), "K=0 codebooks"),
    (torch.zeros(8, 2, dtype=torch.long), r"shape \(8, 2\): expected \[B, K, F\]"),
    (torch.zeros(1, 8, 2), "dtype torch.float32: expected an integer"),
])
def test_bad_codes(tiny: MimiModel, codes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tiny.decode(codes)
    with pytest.raises(ValueError, match=match):
        tiny.decode_latent(codes)


def test_streaming_needs_whole_frames(tiny: MimiModel) -> None:
    with tiny.streaming(1):
        with pytest.raises(ValueError, match="input length 1000 is not a positive multiple of the frame size 1920"):
            tiny.encode(torch.zeros(1, 1, 1000))
        with pytest.raises(ValueError, match="input length 0"):
            tiny.encode(torch.zeros(1, 1, 0))
        with pytest.raises(ValueError, match="batch size 2: this stream was opened with batch_size 1"):
            tiny.encode(torch.zeros(2, 1, 1920))
        with pytest.raises(ValueError, match="nested"):
            with tiny.streaming(1):
                pass
    assert not tiny.is_streaming
    with pytest.raises(ValueError, match="batch_size 0"):
        with tiny.streaming(0):
            pass


def test_bad_dtype_argument(fixtures_dir) -> None:
    with pytest.raises(ValueError, match="dtype torch.int64"):
        load_mimi(fixtures_dir / "mimi_tiny.safetensors", fixtures_dir / "mimi_tiny.json", dtype=torch.int64)
