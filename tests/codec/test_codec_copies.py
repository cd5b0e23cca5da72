"""`MimiModel.copy_sharing_weights`: a model per stream (a server's sessions) that shares the
weights and what the speedups derive from them, each with its own streaming state."""

from __future__ import annotations

import copy
import threading

import pytest
import torch

from mimi_codec import MimiModel
from mimi_codec.modules import fused_seanet


def _speech_like(seed: int, frames: int, frame_size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, 1, frames * frame_size, generator=g) * 0.1).cumsum(-1).tanh() * 0.5


def _stream(model: MimiModel, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes [1, K, F] and audio [1, 1, T] of `wav` streamed frame by frame."""
    codes, audio = [], []
    with torch.no_grad(), model.streaming(1):
        for frame in wav.split(model.frame_size, dim=-1):
            c = model.encode(frame)
            codes.append(c)
            audio.append(model.decode(c))
    return torch.cat(codes, -1), torch.cat(audio, -1)


@pytest.fixture(scope="module")
def warm(tiny: MimiModel) -> MimiModel:
    tiny.warmup()
    return tiny


def test_copies_share_weights_and_derived_caches_not_modules(warm: MimiModel) -> None:
    a, b = warm.copy_sharing_weights(), warm.copy_sharing_weights()
    for dup in (a, b):
        assert dup is not warm and dup.encoder is not warm.encoder and dup.quantizer is not warm.quantizer
        for (name, p), q in zip(warm.named_parameters(), dup.parameters()):
            assert q is p, name
        for (name, buf), q in zip(warm.named_buffers(), dup.buffers()):
            assert q is buf, name
        assert dup.encoder._fused is warm.encoder._fused and dup.decoder._fused is warm.decoder._fused
        assert dup.encoder_transformer.layers[0]._fused_weights is warm.encoder_transformer.layers[0]._fused_weights


def test_a_copys_first_frame_rebuilds_nothing(warm: MimiModel, monkeypatch: pytest.MonkeyPatch) -> None:
    """After `warmup()` on the model, a copy's frames reuse its SEANet programs and flat weights
    (a plain deep copy rebuilt them on its first frame: ~200-450 ms for the full-size model)."""
    builds = []
    real = fused_seanet._build_weights
    monkeypatch.setattr(fused_seanet, "_build_weights", lambda convs: builds.append(1) or real(convs))
    _stream(warm.copy_sharing_weights(), _speech_like(0, 3, warm.frame_size))
    assert builds == []
    # the contrast: an ordinary deep copy builds them again
    _stream(copy.deepcopy(warm), _speech_like(0, 3, warm.frame_size))
    assert len(builds) == 2  # encoder and decoder


def test_copies_stream_like_the_model_interleaved_and_in_threads(warm: MimiModel) -> None:
    frames = 12
    wavs = [_speech_like(seed, frames, warm.frame_size) for seed in (1, 2, 3)]
    expected = [_stream(warm, w) for w in wavs]
    copies = [warm.copy_sharing_weights() for _ in wavs]
    # interleaved, frame by frame, in one thread
    got: list[tuple[list, list]] = [([], []) for _ in wavs]
    with torch.no_grad(), copies[0].streaming(1), copies[1].streaming(1), copies[2].streaming(1):
        for t in range(frames):
            for k, (dup, wav) in enumerate(zip(copies, wavs)):
                c = dup.encode(wav[..., t * warm.frame_size:(t + 1) * warm.frame_size])
                got[k][0].append(c)
                got[k][1].append(dup.decode(c))
    for (codes, audio), (exp_codes, exp_audio) in zip(got, expected):
        assert torch.equal(torch.cat(codes, -1), exp_codes)
        assert torch.equal(torch.cat(audio, -1), exp_audio)
    # at the same time, one thread each (as the chat server's sessions run)
    results: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(wavs)

    def run(k: int) -> None:
        results[k] = _stream(copies[k], wavs[k])

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(wavs))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for res, (exp_codes, exp_audio) in zip(results, expected):
        assert res is not None and torch.equal(res[0], exp_codes) and torch.equal(res[1], exp_audio)


def test_copy_inside_streaming_is_refused(warm: MimiModel) -> None:
    with warm.streaming(1), pytest.raises(ValueError, match=r"copy_sharing_weights\(\) inside streaming\(\)"):
        warm.copy_sharing_weights()
