"""Long input: the chunked whole-file path equals the one-shot path, past the attention context,
and a 10-minute file stays under 1 GB peak RSS with the full-size architecture."""

from __future__ import annotations

import os
import textwrap

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from mimi_codec import MimiModel


@pytest.fixture(scope="module")
def speech(data_dir) -> torch.Tensor:
    """21 s of real speech (bria.mp3), resampled to 24 kHz: [1, 1, T], T not a whole number of frames."""
    audio, sr = sf.read(str(data_dir / "bria.mp3"), dtype="float32", always_2d=True, frames=44100 * 22)
    audio = soxr.resample(audio[:, 0], sr, 24000)[: 24000 * 21 + 77]
    assert audio.shape[0] % 1920
    return torch.from_numpy(np.ascontiguousarray(audio)).view(1, 1, -1)


def _one_shot(model: MimiModel, fn, *args):
    saved = model.chunk_frames
    model.chunk_frames = 10**9  # everything in one call: attention over the whole input at once
    try:
        return fn(*args)
    finally:
        model.chunk_frames = saved


def test_chunked_equals_one_shot_on_long_speech(tiny: MimiModel, speech: torch.Tensor) -> None:
    frames = -(-speech.shape[-1] // 1920)
    assert frames * 2 > 2 * 250  # twice the 250-step (10 s at 25 Hz) attention context
    assert tiny.chunk_frames < frames
    codes = tiny.encode(speech, num_codebooks=32)
    one = _one_shot(tiny, tiny.encode, speech, 32)
    assert codes.shape == (1, 32, frames)
    assert torch.equal(codes, one)
    audio = tiny.decode(codes)
    audio_one = _one_shot(tiny, tiny.decode, codes)
    assert audio.shape == (1, 1, frames * 1920)
    torch.testing.assert_close(audio, audio_one, atol=1e-5, rtol=0)
    assert audio.abs().max() > 0.05


def test_frame_by_frame_stream_equals_whole_past_context(tiny: MimiModel, speech: torch.Tensor) -> None:
    wav = speech[..., : 1920 * 160]  # 12.8 s: 320 steps at 25 Hz, past the 250-step context
    codes = tiny.encode(wav)
    with tiny.streaming(1):
        streamed = torch.cat([tiny.encode(wav[..., i: i + 1920]) for i in range(0, wav.shape[-1], 1920)], -1)
        audio = torch.cat([tiny.decode(codes[..., f: f + 1]) for f in range(160)], -1)
    assert torch.equal(streamed, codes)
    torch.testing.assert_close(audio, tiny.decode(codes), atol=1e-5, rtol=0)


def test_chunk_size_does_not_change_codes(tiny: MimiModel) -> None:
    g = torch.Generator().manual_seed(7)
    wav = torch.randn(2, 1, 1920 * 30 + 5, generator=g) * 0.2
    ref = tiny.encode(wav)
    saved = tiny.chunk_frames, tiny.seanet_chunk_frames
    try:
        for n, pieces in ((1, 1), (3, 2), (7, 7), (7, 3), (30, 4), (125, 25)):
            tiny.chunk_frames, tiny.seanet_chunk_frames = n, pieces
            assert torch.equal(tiny.encode(wav), ref), (n, pieces)
    finally:
        tiny.chunk_frames, tiny.seanet_chunk_frames = saved


def test_the_seanets_take_a_chunk_in_pieces(tiny: MimiModel) -> None:
    """A whole-file chunk (10 s by default) goes through each SEANet in pieces of
    `seanet_chunk_frames` frames, so the SEANets' activations stay those of a short piece
    while the transformers see the whole chunk; codes and audio are the one-piece path's."""
    wav = torch.randn(1, 1, 1920 * 30, generator=torch.Generator().manual_seed(3)) * 0.2
    saved = tiny.chunk_frames, tiny.seanet_chunk_frames
    names = ("encoder", "decoder", "encoder_transformer", "decoder_transformer")
    seen: dict[str, list[int]] = {name: [] for name in names}  # the time steps of each call

    def hook(name: str):
        return lambda module, args: seen[name].append(args[0].shape[-1])

    hooks = [getattr(tiny, name).register_forward_pre_hook(hook(name)) for name in names]
    try:
        tiny.chunk_frames, tiny.seanet_chunk_frames = 125, 30
        codes = tiny.encode(wav)
        audio = tiny.decode(codes)
        assert seen == {"encoder": [1920 * 30], "decoder": [60],
                        "encoder_transformer": [60], "decoder_transformer": [60]}
        for v in seen.values():
            v.clear()
        tiny.seanet_chunk_frames = 7
        assert torch.equal(tiny.encode(wav), codes)
        torch.testing.assert_close(tiny.decode(codes), audio, atol=1e-6, rtol=0)
    finally:
        tiny.chunk_frames, tiny.seanet_chunk_frames = saved
        for h in hooks:
            h.remove()
    assert seen["encoder"] == [1920 * 7] * 4 + [1920 * 2]  # 30 frames: 4 pieces of 7, then 2
    assert seen["decoder"] == [14] * 4 + [4]  # the same at 25 Hz, after the upsample
    assert seen["encoder_transformer"] == [60] and seen["decoder_transformer"] == [60]


PEAK_SCRIPT = textwrap.dedent("""
    import resource, sys, torch
    from mimi_codec import MimiModel
    torch.manual_seed(0)
    torch.set_num_threads(1)  # it runs beside the other tests (see below)
    model = MimiModel().eval()
    seconds = float(sys.argv[1])
    wav = torch.randn(1, 1, int(24000 * seconds)) * 0.1
    codes = model.encode(wav)
    audio = model.decode(codes)
    assert audio.shape[-1] >= wav.shape[-1]
    # VmHWM is this process's own peak; ru_maxrss can carry the forking parent's peak over exec
    hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")]
    print(int(hwm[0].split()[1]) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
""")
LONG_SECONDS = float(os.environ.get("MIMI_LONG_TEST_SECONDS", "600"))


# ~4 minutes of one core: started when collection ends, it runs beside the rest of the suite
@pytest.mark.slow
@pytest.mark.background(PEAK_SCRIPT, str(LONG_SECONDS))
def test_ten_minutes_full_size_under_1gb(background_output: str) -> None:
    peak_mb = int(background_output.split()[-1]) / 1024
    print(f"peak RSS for {LONG_SECONDS:.0f} s encode+decode, full-size Mimi fp32: {peak_mb:.0f} MB")
    assert peak_mb < 1024, peak_mb
