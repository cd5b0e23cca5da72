"""Backends called directly: the echo is exactly the delayed Mimi round trip; sessions are independent."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from chatutil import FIXTURES, speech

from mimi_moshi_chat.backends import BackendOptions, load_backend
from mimi_moshi_chat.protocol import SamplingSettings

OPTIONS = BackendOptions(mimi_weights=str(FIXTURES / "mimi_tiny.safetensors"),
                         mimi_config=str(FIXTURES / "mimi_tiny.json"), echo_delay_frames=3)


def reference_roundtrip(frames: np.ndarray) -> np.ndarray:
    """Streaming Mimi round trip of [F, 1920] frames with a freshly loaded model: [F, 1920]."""
    from mimi_codec import load_mimi

    mimi = load_mimi(OPTIONS.mimi_weights, OPTIONS.mimi_config, num_codebooks=8)
    out = []
    with torch.inference_mode(), mimi.streaming(1):
        for f in frames:
            out.append(mimi.decode(mimi.encode(torch.from_numpy(f).view(1, 1, -1))).view(-1).numpy())
    return np.stack(out)


@pytest.fixture(scope="module")
def echo():
    return load_backend("echo", OPTIONS)


def test_echo_is_the_delayed_streaming_roundtrip(echo):
    frames = speech(1.6).reshape(-1, 1920)  # 20 frames of speech
    session = echo.open_session(SamplingSettings())
    got = np.stack([session.step(f).pcm for f in frames])
    session.close()
    expected = reference_roundtrip(frames)
    assert np.all(got[:3] == 0)  # the delay line starts silent
    np.testing.assert_allclose(got[3:], expected[:-3], atol=1e-6, rtol=0)
    assert np.abs(expected).max() > 0.01  # not trivially silent


def test_echo_sessions_do_not_share_state(echo):
    a_frames = speech(0.8).reshape(-1, 1920)
    b_frames = speech(0.8, name="p260_00000.mp3").reshape(-1, 1920)
    a, b = echo.open_session(SamplingSettings()), echo.open_session(SamplingSettings())
    out_a, out_b = [], []
    for fa, fb in zip(a_frames, b_frames):  # interleaved steps
        out_a.append(a.step(fa).pcm)
        out_b.append(b.step(fb).pcm)
    a.close(), b.close()
    np.testing.assert_allclose(np.stack(out_a)[3:], reference_roundtrip(a_frames)[:-3], atol=1e-6, rtol=0)
    np.testing.assert_allclose(np.stack(out_b)[3:], reference_roundtrip(b_frames)[:-3], atol=1e-6, rtol=0)
    # The sessions are model copies sharing the weights, not copies of them.
    assert a._mimi is not echo.mimi
    assert next(a._mimi.parameters()).data_ptr() == next(echo.mimi.parameters()).data_ptr()


def test_echo_rejects_bad_frames(echo):
    session = echo.open_session(SamplingSettings())
    with pytest.raises(ValueError, match=r"frame has shape \(100,\), expected \(1920,\)"):
        session.step(np.zeros(100, dtype=np.float32))
    session.close()


def test_unknown_backend_and_missing_remote_url():
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        load_backend("nope", OPTIONS)
    with pytest.raises(ValueError, match="needs --remote-url"):
        load_backend("remote", OPTIONS)


def test_moshi_backend_tiny_lm_text_and_audio():
    options = BackendOptions(
        mimi_weights=OPTIONS.mimi_weights, mimi_config=OPTIONS.mimi_config,
        lm_weights=str(FIXTURES / "moshi_tiny.safetensors"), lm_config=str(FIXTURES / "moshi_tiny.json"),
        tokenizer=str(FIXTURES / "tokenizer_tiny.model"))
    backend = load_backend("moshi", options)
    frames = speech(0.8).reshape(-1, 1920)

    def run(seed):
        session = backend.open_session(SamplingSettings(text_seed=seed))
        outs = [session.step(f) for f in frames]
        session.close()
        return outs

    outs = run(1)
    # Frame 0 is dropped (kyutai's server does the same); frame 1 is the generator's first step,
    # which returns nothing while the acoustic delay (1 step in this config) fills.
    assert outs[0].pcm is None and outs[1].pcm is None
    assert all(o.pcm is not None and o.pcm.shape == (1920,) for o in outs[2:])
    texts = [o.text for o in outs if o.text]
    assert texts and all(isinstance(t, str) and t for t in texts)
    again = run(1)
    assert [o.text for o in again] == [o.text for o in outs]  # seeded: reproducible
    np.testing.assert_array_equal(again[-1].pcm, outs[-1].pcm)
    other = run(2)
    assert [o.text for o in other] != [o.text for o in outs]

    # The session is moshi_lm's own duplex pipeline: after the dropped first frame, its audio and
    # text equal `converse` on the remaining frames with the same seed, frame for frame.
    from moshi_lm import converse

    ref = converse(backend.models.pipeline(seed=1), torch.from_numpy(frames[1:].reshape(1, 1, -1)))
    got = np.concatenate([np.zeros(1920, np.float32) if o.pcm is None else o.pcm for o in outs[1:]])
    np.testing.assert_array_equal(got, ref.pcm.view(-1).numpy())
    assert "".join(o.text or "" for o in outs) == ref.texts[0]
