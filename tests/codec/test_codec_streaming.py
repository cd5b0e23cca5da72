"""Streaming: frame-by-frame and random chunkings give what the whole-input path gives."""

from __future__ import annotations

import random

import pytest
import torch
from safetensors.torch import load_file

from mimi_codec import MimiModel
from mimi_codec.modules.conv import CausalConv1d, CausalConvTranspose1d


def _chunks(total: int, sizes: list[int], seed: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    out, i = [], 0
    while i < total:
        n = min(rng.choice(sizes), total - i)
        out.append((i, i + n))
        i += n
    return out


def test_reference_stream_vectors(tiny: MimiModel, vectors) -> None:
    wav = vectors["wav"]
    with tiny.streaming(1):
        codes = torch.cat([tiny.encode(wav[..., i: i + 1920]) for i in range(0, 96000, 1920)], -1)
    assert torch.equal(codes, vectors["stream_codes_q8"].long())
    with tiny.streaming(1):
        audio = torch.cat([tiny.decode(vectors["codes_q8"][..., f: f + 1]) for f in range(50)], -1)
    err = (audio - vectors["stream_decoded_q8"]).abs().max().item()
    assert err <= 1e-4, err  # measured 3.9e-7


@pytest.mark.parametrize("sizes", [[1], [2], [3], [1, 2, 3]])
@pytest.mark.parametrize("seed", [0, 1])
def test_streaming_equals_batch(tiny: MimiModel, vectors, sizes: list[int], seed: int) -> None:
    wav = vectors["wav"]
    batch_codes = tiny.encode(wav, num_codebooks=16)
    batch_audio = tiny.decode(batch_codes)
    with tiny.streaming(1):
        codes = torch.cat([tiny.encode(wav[..., a * 1920: b * 1920], num_codebooks=16)
                           for a, b in _chunks(50, sizes, seed)], -1)
        audio = torch.cat([tiny.decode(batch_codes[..., a:b])
                           for a, b in _chunks(50, sizes, seed + 100)], -1)
    assert torch.equal(codes, batch_codes)
    torch.testing.assert_close(audio, batch_audio, atol=1e-5, rtol=0)


def test_batch_equals_per_item(tiny: MimiModel, vectors) -> None:
    wav = vectors["wav"][..., :38400]
    g = torch.Generator().manual_seed(0)
    batch = torch.cat([wav, 0.3 * torch.randn(1, 1, 38400, generator=g), wav.flip(-1)], 0)
    codes = tiny.encode(batch)
    audio = tiny.decode(codes)
    for b in range(3):
        assert torch.equal(codes[b: b + 1], tiny.encode(batch[b: b + 1]))
        torch.testing.assert_close(audio[b: b + 1], tiny.decode(codes[b: b + 1]), atol=1e-5, rtol=0)
    with tiny.streaming(3):
        s_codes = torch.cat([tiny.encode(batch[..., i: i + 3840]) for i in range(0, 38400, 3840)], -1)
        s_audio = torch.cat([tiny.decode(codes[..., f: f + 1]) for f in range(20)], -1)
    assert torch.equal(s_codes, codes)
    torch.testing.assert_close(s_audio, audio, atol=1e-5, rtol=0)
    assert not torch.equal(codes[0], codes[1])


def test_reset_restarts_the_stream(tiny: MimiModel, vectors) -> None:
    wav = vectors["wav"][..., : 1920 * 6]
    codes = tiny.encode(wav)
    with tiny.streaming(1) as state:
        first = tiny.encode(wav)
        audio1 = tiny.decode(first)
        again = tiny.encode(wav)  # continuing the stream: not the same as a fresh start
        state.reset()
        after_reset = tiny.encode(wav)
        audio2 = tiny.decode(after_reset)  # the decoder stream was reset too
    assert torch.equal(first, codes) and torch.equal(after_reset, codes)
    assert not torch.equal(again, codes)
    torch.testing.assert_close(audio1, audio2, atol=0, rtol=0)


def test_warmup_streams_a_throwaway_frame(tiny: MimiModel, vectors, monkeypatch) -> None:
    wav = vectors["wav"][..., : 1920 * 4]
    with tiny.streaming(1):
        before = [tiny.encode(wav[..., i: i + 1920]) for i in range(0, wav.shape[-1], 1920)]
        with pytest.raises(ValueError, match="inside streaming"):
            tiny.warmup()
    calls: list[tuple[int, ...]] = []
    encode = MimiModel.encode
    monkeypatch.setattr(MimiModel, "encode", lambda self, x, *a: calls.append(tuple(x.shape)) or encode(self, x, *a))
    tiny.warmup(2)
    assert calls == [(2, 1, 1920)] and not tiny.is_streaming  # one streamed frame, stream closed
    with tiny.streaming(1):  # nothing carried over into the next stream
        after = [tiny.encode(wav[..., i: i + 1920]) for i in range(0, wav.shape[-1], 1920)]
    assert all(torch.equal(a, b) for a, b in zip(before, after))


def test_state_is_typed_and_fresh_per_stream(tiny: MimiModel) -> None:
    state = tiny.init_state(2)
    assert state.batch_size == 2
    assert state.encoder.transformer.offset == 0
    assert state.encoder.downsample.previous.shape == (2, 64, 2)
    assert state.decoder.upsample.partial.shape == (2, 64, 2)
    with tiny.streaming(2) as s:
        tiny.encode(torch.zeros(2, 1, 3840))
        assert s.encoder.transformer.offset == 4  # 2 frames = 4 steps at 25 Hz
        assert s.encoder.transformer.layers[0].keys.shape[2] == 4
        tiny.decode(torch.zeros(2, 8, 3, dtype=torch.long))
        assert s.decoder.transformer.offset == 6
    assert state.encoder.transformer.offset == 0


@pytest.mark.parametrize("kernel, stride, dilation, mode", [
    (7, 1, 1, "constant"), (3, 1, 2, "constant"), (8, 4, 1, "constant"), (4, 2, 1, "replicate"),
])
@pytest.mark.parametrize("chunk", [1, 2, 5])
def test_conv_streaming_equals_whole(kernel: int, stride: int, dilation: int, mode: str, chunk: int) -> None:
    torch.manual_seed(0)
    conv = CausalConv1d(3, 5, kernel, stride=stride, dilation=dilation, pad_mode=mode)
    convtr = CausalConvTranspose1d(5, 3, max(kernel, stride), stride=stride)
    x = torch.randn(2, 3, 20 * stride)
    with torch.no_grad():
        y, z = conv(x), None
        z = convtr(y)
        cs, ts = conv.init_state(2), convtr.init_state(2)
        ys, zs = [], []
        for i in range(0, 20, chunk):
            ys.append(conv(x[..., i * stride: (i + chunk) * stride], cs))
            zs.append(convtr(ys[-1], ts))
    assert y.shape == (2, 5, 20) and z.shape == (2, 3, 20 * stride)
    torch.testing.assert_close(torch.cat(ys, -1), y, atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.cat(zs, -1), z, atol=1e-6, rtol=0)
    # causal: the first output only depends on the first inputs (zero or replicated padding)
    padded = torch.nn.functional.pad(x, (conv.context, 0), mode="replicate" if mode == "replicate" else "constant")
    ref = torch.nn.functional.conv1d(padded, conv.weight, conv.bias, stride, 0, dilation)
    torch.testing.assert_close(y, ref, atol=1e-6, rtol=0)


def test_ring_cache_reproduces_reference_streaming_past_context(tiny: MimiModel, vectors, fixtures_dir) -> None:
    ref = load_file(str(fixtures_dir.parent / "codec" / "data" / "ref_stream_long.safetensors"))
    w = vectors["wav"]
    wav = torch.cat([w, w.flip(-1), 0.5 * w], -1)
    ref_codes = ref["stream_codes_q32"].long()

    def stream(ring: bool) -> tuple[torch.Tensor, torch.Tensor]:
        with tiny.streaming(1, ring_cache=ring):
            codes = torch.cat([tiny.encode(wav[..., i: i + 1920], 32) for i in range(0, 288000, 1920)], -1)
        with tiny.streaming(1, ring_cache=ring):
            audio = torch.cat([tiny.decode(ref_codes[:, :8, f: f + 1]) for f in range(150)], -1)
        return codes, audio

    codes, audio = stream(ring=True)  # kyutai's streaming, exactly
    assert torch.equal(codes, ref_codes)
    err = (audio - ref["stream_decoded_q8"]).abs().max().item()
    assert err <= 1e-4, err  # measured 4.5e-7

    codes, audio = stream(ring=False)  # default: equal to the whole-input path at any length
    assert torch.equal(codes, tiny.encode(wav, 32))
    torch.testing.assert_close(audio, tiny.decode(ref_codes[:, :8]), atol=1e-5, rtol=0)
    # the two differ only after the 250-step context (125 frames)
    assert torch.equal(codes[..., :125], ref_codes[..., :125]) and not torch.equal(codes, ref_codes)
