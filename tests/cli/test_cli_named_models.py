"""`mimi ... --model small` through subprocess: encoding writes the shipped model's id in the
header, decoding picks the model the header names (checked against the library's decode and
against another model's), a different --model warns, and bad choices are one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from cliutil import WEIGHTS, assert_fails, run_mimi

from mimi_codec import load_mimi
from mimi_codec.audio import load_audio
from mimi_codec.bitstream import read_mimi, write_mimi

OFFICIAL_ID = "kyutai/moshiko-pytorch-bf16:tokenizer-e351c8d8-checkpoint125"
PCM16 = 1 / 32768 + 1e-6  # a wav file holds 16-bit samples


@pytest.fixture(scope="module")
def small():
    return load_mimi(model="small")


@pytest.fixture(scope="module")
def small_mimi(tmp_path_factory, speech) -> Path:
    path = tmp_path_factory.mktemp("codes") / "small.mimi"
    proc = run_mimi("encode", str(speech), str(path), "--model", "small")
    assert proc.returncode == 0, proc.stderr.decode()
    return path


def test_encode_with_model_small_writes_its_id_and_codes(small, speech, small_mimi) -> None:
    data = read_mimi(small_mimi)
    assert data.intact and data.header.model == "mimi-codec:small"
    wav = load_audio(speech).wav
    expected = small.encode(torch.from_numpy(wav)[None, None], num_codebooks=8)[0].numpy()
    np.testing.assert_array_equal(data.codes, expected)
    info = run_mimi("info", str(small_mimi))
    assert info.returncode == 0 and "model       mimi-codec:small" in info.stdout.decode()


def test_decode_picks_the_model_the_header_names(small, small_mimi, tmp_path) -> None:
    proc = run_mimi("decode", str(small_mimi), str(tmp_path / "auto.wav"))
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "made with the shipped model 'small'; decoding with it" in err and "warning" not in err
    auto, rate = sf.read(tmp_path / "auto.wav", dtype="float32")
    data = read_mimi(small_mimi)
    assert rate == 24000 and len(auto) == data.header.num_samples
    expected = small.decode(torch.from_numpy(data.codes)[None])[0, 0, : len(auto)].numpy()
    np.testing.assert_allclose(auto, np.clip(expected, -1, 1), atol=PCM16)
    # the same as naming the model, and not what another model makes of the same codes
    proc = run_mimi("decode", str(small_mimi), str(tmp_path / "named.wav"), "--model", "small")
    assert proc.returncode == 0 and "warning" not in proc.stderr.decode()
    np.testing.assert_array_equal(sf.read(tmp_path / "named.wav", dtype="float32")[0], auto)
    proc = run_mimi("decode", str(small_mimi), str(tmp_path / "tiny.wav"), *WEIGHTS)
    assert proc.returncode == 0 and "was made with weights 'mimi-codec:small'" in proc.stderr.decode()
    tiny = sf.read(tmp_path / "tiny.wav", dtype="float32")[0]
    assert np.abs(tiny - auto).max() > 0.01


def test_roundtrip_with_model_small_equals_encode_then_decode(small, speech, small_mimi, tmp_path) -> None:
    proc = run_mimi("roundtrip", str(speech), str(tmp_path / "rt.wav"), "--model", "small")
    assert proc.returncode == 0, proc.stderr.decode()
    assert "8 codebooks x 11 bits, 38 frames: 1,100 bit/s of codes" in proc.stdout.decode()
    data = read_mimi(small_mimi)
    expected = small.decode(torch.from_numpy(data.codes)[None])[0, 0, : data.header.num_samples].numpy()
    np.testing.assert_allclose(sf.read(tmp_path / "rt.wav", dtype="float32")[0], np.clip(expected, -1, 1), atol=PCM16)


def test_decode_warns_when_model_differs_from_the_header(small, small_mimi, tmp_path) -> None:
    data = read_mimi(small_mimi)
    other = tmp_path / "official.mimi"
    write_mimi(other, data.codes, model=OFFICIAL_ID, num_samples=data.header.num_samples)
    proc = run_mimi("decode", str(other), str(tmp_path / "o.wav"), "--model", "small")
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert f"warning: {other} was made with weights {OFFICIAL_ID!r}, decoding with 'mimi-codec:small'" in err


@pytest.mark.parametrize("command", ["encode", "decode", "roundtrip"])
def test_model_errors(command, speech, small_mimi, tmp_path) -> None:
    src = small_mimi if command == "decode" else speech
    out = str(tmp_path / ("o.mimi" if command == "encode" else "o.wav"))
    assert_fails(run_mimi(command, str(src), out, "--model", "big"),
                 "model 'big': no such model in this package; shipped models: [", "'small'")
    assert_fails(run_mimi(command, str(src), out, "--model", "small", *WEIGHTS[:2]),
                 "--model small: give either --model or --weights/--config, not both")
    assert_fails(run_mimi(command, str(src), out, "--model", "small", *WEIGHTS[2:]),
                 "--model small: give either --model or --weights/--config, not both")
    assert list(tmp_path.iterdir()) == []  # nothing written
