"""`set_decoder_precision("fp16")` and `--decoder-precision fp16`: the decoder's GEMMs read
float16 weights, the codes never change, the audio stays close to fp32 but is not identical."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from mimi_codec import load_mimi
from mimi_codec.modules import gemm

pytestmark = pytest.mark.skipif(not gemm.fp16_available(), reason="this PyTorch build has no FBGEMM")


@pytest.fixture(scope="module")
def tiny(fixtures_dir):
    return load_mimi(fixtures_dir / "mimi_tiny.safetensors", fixtures_dir / "mimi_tiny.json")


def _stream(model, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.inference_mode(), model.streaming(1):
        codes = torch.cat([model.encode(wav[..., i:i + 1920]) for i in range(0, wav.shape[-1], 1920)], -1)
        audio = torch.cat([model.decode(codes[..., f:f + 1]) for f in range(codes.shape[-1])], -1)
    return codes, audio


def _snr_db(ref: torch.Tensor, other: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).sum() / (other - ref).pow(2).sum()))


def test_fp16_decoder_keeps_codes_and_audio_close(tiny, fixtures_dir) -> None:
    wav = load_file(str(fixtures_dir / "mimi_tiny_vectors.safetensors"))["wav"][..., : 1920 * 12]
    tiny.set_decoder_precision("fp32")
    codes32, audio32 = _stream(tiny, wav)
    tiny.set_decoder_precision("fp16")
    try:
        assert tiny.decoder_precision == "fp16"
        codes16, audio16 = _stream(tiny, wav)
        with torch.inference_mode():
            whole16 = tiny.decode(codes16)
        # the decoder's convolutions took float16 weights; its transformer and the encoder did not
        conv = tiny.decoder.model[0]
        assert conv.gemm_precision == "fp16" and isinstance(conv._packed._packed["fp16"][1], torch.ScriptObject)
        assert tiny.upsample.gemm_precision == "fp16"
        assert tiny.decoder_transformer.layers[0].linear1.gemm_precision == "fp32"
        assert tiny.encoder.model[0].gemm_precision == "fp32"
    finally:
        tiny.set_decoder_precision("fp32")
    assert torch.equal(codes16, codes32)
    assert not torch.equal(audio16, audio32)
    snr = _snr_db(audio32, audio16)
    print(f"tiny model, streamed decode fp16 vs fp32: SNR {snr:.1f} dB")
    assert snr > 40, snr
    assert _snr_db(audio32, whole16) > 40


def test_bad_precision_is_refused(tiny) -> None:
    with pytest.raises(ValueError, match="precision 'half'"):
        tiny.set_decoder_precision("half")
    assert tiny.decoder_precision == "fp32"
