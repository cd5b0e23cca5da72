"""End to end: user audio -> Mimi -> LMGen -> Mimi -> reply audio + text, frame by frame."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from moshi_lm import LMGen
from moshi_lm.bundle import load_moshi
from moshi_lm.generate.pipeline import DuplexPipeline, converse


@pytest.fixture(scope="module")
def models(fixtures_dir):
    return load_moshi(lm_weights=fixtures_dir / "moshi_tiny.safetensors", lm_config=fixtures_dir / "moshi_tiny.json",
                      mimi_weights=fixtures_dir / "mimi_tiny.safetensors", mimi_config=fixtures_dir / "mimi_tiny.json",
                      tokenizer=fixtures_dir / "tokenizer_tiny.model")


@pytest.fixture(scope="module")
def mimi_vectors(fixtures_dir):
    return load_file(fixtures_dir / "mimi_tiny_vectors.safetensors")


@pytest.fixture(scope="module")
def lm_vectors(fixtures_dir):
    return load_file(fixtures_dir / "moshi_tiny_vectors.safetensors")


def test_wav_in_reproduces_reference_greedy_conversation(models, mimi_vectors, lm_vectors):
    """The fixture's user stream is Mimi's codes of the fixture's speech: feeding that speech
    through the pipeline gives the reference's greedy tokens, and the reply audio is the
    streaming decode of those tokens."""
    wav = mimi_vectors["wav"]
    conv = converse(models.pipeline(use_sampling=False), wav)
    ref = lm_vectors["greedy_tokens"].long()
    assert conv.tokens.shape == (1, 9, 50)
    assert torch.equal(conv.tokens, ref)
    assert conv.pcm.shape == (1, 1, 96000)
    assert torch.equal(conv.pcm[..., :1920], torch.zeros(1, 1, 1920))
    with models.mimi.streaming(1):
        expected = torch.cat([models.mimi.decode(ref[:, 1:, t:t + 1]) for t in range(1, 50)], dim=-1)
    assert (conv.pcm[..., 1920:] - expected).abs().max().item() < 1e-6
    pieces = [models.tokenizer.piece(int(t)) for t in ref[0, 0, 1:]]
    assert conv.texts == ["".join(p or "" for p in pieces)]


def test_step_by_step_batch(models, mimi_vectors):
    pipe = models.pipeline(seed=3)
    wav = mimi_vectors["wav"][..., :1920 * 6]
    wav2 = torch.cat([wav, 0.5 * wav.flip(-1)])
    with pipe.streaming(2):
        frames = [pipe.step(wav2[..., i * 1920:(i + 1) * 1920]) for i in range(6)]
    assert frames[0].pcm is None and frames[0].texts == [None, None] and frames[0].text is None
    for f in frames[1:]:
        assert f.pcm.shape == (2, 1, 1920) and f.tokens.shape == (2, 9, 1) and len(f.texts) == 2
        assert torch.isfinite(f.pcm).all()
        for t, text in zip(f.tokens[:, 0, 0].tolist(), f.texts):
            assert text == models.tokenizer.piece(t)
    # same seed, same audio: same conversation
    again = converse(models.pipeline(seed=3), wav2)
    assert torch.equal(again.tokens[..., 1:], torch.cat([f.tokens for f in frames[1:]], dim=-1))


def test_pipeline_errors(models):
    pipe = DuplexPipeline(LMGen(models.lm), models.mimi, models.tokenizer)
    with pytest.raises(RuntimeError, match="streaming"):
        pipe.step(torch.zeros(1, 1, 1920))
    with pipe.streaming(1):
        with pytest.raises(ValueError, match=r"expected \[B, 1, 1920\]"):
            pipe.step(torch.zeros(1, 1, 1000))
    with pytest.raises(ValueError, match=r"expected \[B, 1, N\]"):
        converse(pipe, torch.zeros(1000))


def test_load_moshi_missing_file(fixtures_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="LM weights"):
        load_moshi(lm_weights=tmp_path / "none.safetensors", lm_config=fixtures_dir / "moshi_tiny.json",
                   mimi_weights=fixtures_dir / "mimi_tiny.safetensors", mimi_config=fixtures_dir / "mimi_tiny.json",
                   tokenizer=fixtures_dir / "tokenizer_tiny.model")
