"""Parity with kyutai's reference on the tiny fixture model (vectors made by moshi 0.2.13)."""

from __future__ import annotations

import pytest
import torch

from mimi_codec import MimiModel


def test_properties(tiny: MimiModel) -> None:
    assert (tiny.sample_rate, tiny.frame_rate, tiny.frame_size) == (24000, 12.5, 1920)
    assert (tiny.num_codebooks, tiny.total_codebooks, tiny.cardinality) == (8, 32, 2048)
    assert tiny.config.seanet.dimension == 64


@pytest.mark.parametrize("k", [8, 32])
def test_encode_codes_exact(tiny: MimiModel, vectors, k: int) -> None:
    codes = tiny.encode(vectors["wav"], num_codebooks=k)
    assert codes.dtype == torch.int64 and codes.shape == (1, k, 50)
    assert torch.equal(codes, vectors[f"codes_q{k}"].long())


def test_encode_default_codebooks(tiny: MimiModel, vectors) -> None:
    assert torch.equal(tiny.encode(vectors["wav"]), vectors["codes_q8"].long())


@pytest.mark.parametrize("k", [8, 32])
def test_decode_close(tiny: MimiModel, vectors, k: int) -> None:
    wav = tiny.decode(vectors[f"codes_q{k}"])
    ref = vectors[f"decoded_q{k}"]
    assert wav.shape == ref.shape == (1, 1, 96000)
    err = (wav - ref).abs().max().item()
    assert err <= 1e-4, err  # measured 4.3e-7 (q8) and 5.4e-7 (q32)
    assert ref.abs().max() > 0.1  # the comparison is not between silences


def test_decode_latent_close(tiny: MimiModel, vectors) -> None:
    lat = tiny.decode_latent(vectors["codes_q8"])
    assert lat.shape == (1, 64, 50)
    torch.testing.assert_close(lat, vectors["latent_q8"], atol=1e-5, rtol=0)


def test_fewer_codebooks_are_a_prefix(tiny: MimiModel, vectors) -> None:
    # Residual quantization: asking for K codebooks gives the first K of the 32.
    codes = tiny.encode(vectors["wav"][..., :19200], num_codebooks=3)
    assert torch.equal(codes, vectors["codes_q32"][:, :3, :10].long())


def test_padding_to_whole_frames(tiny: MimiModel, vectors) -> None:
    # Like the reference, audio is zero-padded at the end to whole frames: F = ceil(T / 1920).
    wav = vectors["wav"][..., : 1920 * 5 + 7]
    codes = tiny.encode(wav)
    assert codes.shape == (1, 8, 6)
    padded = torch.nn.functional.pad(wav, (0, 1920 - 7))
    assert torch.equal(codes, tiny.encode(padded))
    assert torch.equal(codes[..., :5], vectors["codes_q8"][..., :5].long())
    assert tiny.encode(vectors["wav"][..., :1]).shape == (1, 8, 1)
