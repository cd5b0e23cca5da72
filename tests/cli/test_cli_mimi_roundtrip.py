"""`mimi` through subprocess on real recordings, as a user runs it, checked against the library:
the codes in each file equal `model.encode` of the same resampled audio, decoding restores the
input's length, pipes work, and 10 s of speech at 8 codebooks is 1,100 bit/s of codes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from cliutil import FIXTURES, MIMI, WEIGHTS, run_mimi

from mimi_codec import load_mimi
from mimi_codec.audio import load_audio
from mimi_codec.bitstream import read_mimi, write_mimi

@pytest.fixture(scope="module")
def model():
    return load_mimi(FIXTURES / "mimi_tiny.safetensors", FIXTURES / "mimi_tiny.json", num_codebooks=32)


def reference_codes(model, wav: np.ndarray, k: int) -> np.ndarray:
    return model.encode(torch.from_numpy(wav)[None, None], num_codebooks=k)[0].numpy()


@pytest.fixture(scope="module")
def recordings(tmp_path_factory, data_dir) -> dict[str, Path]:
    """Real speech at 16, 22.05, 24, 44.1 and 48 kHz; mp3, flac and wav."""
    folder = tmp_path_factory.mktemp("inputs")
    bria, rate = sf.read(data_dir / "bria.mp3", dtype="float32")
    assert rate == 44100
    sf.write(folder / "bria_3s.mp3", bria[: 3 * rate], rate)  # 44.1 kHz mp3, cut to keep the test short
    return {
        "16k_mp3": data_dir / "1320_00000.mp3",
        "24k_mp3": data_dir / "p240_00000.mp3",
        "22k_flac": data_dir / "ljspeech" / "LJ001-0002.flac",
        "44k_mp3": folder / "bria_3s.mp3",
        "48k_wav": data_dir / "metavoice_audio.wav",
    }


@pytest.fixture(scope="module")
def encoded(tmp_path_factory, recordings) -> Path:
    """All recordings encoded by one `mimi encode IN... -o DIR` (batched on the model)."""
    out = tmp_path_factory.mktemp("codes")
    inputs = [str(p) for p in recordings.values()]
    proc = run_mimi("encode", *inputs, "-o", str(out), *WEIGHTS)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == b""
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == len(inputs) and all(line.startswith("wrote ") for line in lines)
    return out


def test_batch_encode_codes_equal_model_encode(model, recordings, encoded) -> None:
    for path in recordings.values():
        data = read_mimi(encoded / (path.stem + ".mimi"))
        audio = load_audio(path)
        assert data.intact
        assert data.header.num_codebooks == 8 and data.header.codebook_bits == 11
        assert data.header.num_samples == len(audio.wav)
        assert data.header.extra == {
            "source_sample_rate": audio.source_sample_rate,
            "source_num_samples": audio.source_num_samples,
        }
        assert data.header.model.startswith("mimi_tiny.safetensors@sha256:")
        assert data.num_frames == -(-len(audio.wav) // 1920)
        np.testing.assert_array_equal(data.codes, reference_codes(model, audio.wav, 8), err_msg=str(path))


@pytest.mark.parametrize("key", ["16k_mp3", "24k_mp3", "22k_flac", "44k_mp3", "48k_wav"])
def test_decode_restores_length(model, recordings, encoded, tmp_path, key: str) -> None:
    """Decoding at the input's own rate gives exactly the input's length (and, at 24 kHz, the
    model's decode of the file's codes)."""
    src = recordings[key]
    mimi_file = encoded / (src.stem + ".mimi")
    data = read_mimi(mimi_file)
    source = sf.info(str(src))
    out_path = tmp_path / ("out.wav" if key == "24k_mp3" else "out.flac")
    proc = run_mimi("decode", str(mimi_file), str(out_path), "--sample-rate", str(source.samplerate), *WEIGHTS)
    assert proc.returncode == 0, proc.stderr.decode()
    assert "warning" not in proc.stderr.decode()
    out, rate = sf.read(out_path, dtype="float32")
    assert rate == source.samplerate
    assert len(out) == load_audio(src).source_num_samples == len(sf.read(src)[0])
    if key == "24k_mp3":  # no resampling: the wav is the model's decode, as 16-bit PCM
        assert len(out) == data.header.num_samples
        expected = model.decode(torch.from_numpy(data.codes)[None])[0, 0, : len(out)].numpy()
        np.testing.assert_allclose(out, np.clip(expected, -1, 1), atol=1 / 32768 + 1e-6)


def test_pipe_encode_to_decode(model, recordings, encoded, tmp_path) -> None:
    """`mimi encode in - | mimi decode - out.wav` gives the same file as going through disk."""
    src = recordings["16k_mp3"]
    cmd = (
        f"set -o pipefail; '{MIMI}' encode '{src}' - {' '.join(WEIGHTS)} "
        f"| '{MIMI}' decode - '{tmp_path / 'piped.wav'}' {' '.join(WEIGHTS)}"
    )
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    data = read_mimi(encoded / (src.stem + ".mimi"))
    piped, rate = sf.read(tmp_path / "piped.wav", dtype="float32")
    assert rate == 24000 and len(piped) == data.header.num_samples
    expected = model.decode(torch.from_numpy(data.codes)[None])[0, 0, : len(piped)].numpy()
    np.testing.assert_allclose(piped, np.clip(expected, -1, 1), atol=1 / 32768 + 1e-6)
    # stdin -> .mimi on stdout, read back
    proc = run_mimi("encode", "-", "-", *WEIGHTS, input=src.read_bytes())
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == (encoded / (src.stem + ".mimi")).read_bytes()


def test_ten_seconds_of_speech_is_1100_bits_per_second(data_dir, tmp_path) -> None:
    speech = load_audio(data_dir / "bria.mp3").wav[: 10 * 24000]
    sf.write(tmp_path / "speech10.wav", speech, 24000, subtype="FLOAT")
    proc = run_mimi("encode", str(tmp_path / "speech10.wav"), str(tmp_path / "s.mimi"), "-q", "8", *WEIGHTS)
    assert proc.returncode == 0, proc.stderr.decode()
    facts = json.loads(run_mimi("info", "--json", str(tmp_path / "s.mimi")).stdout)
    assert facts["frames"] == 125 and facts["packets"] == 5 and facts["duration_s"] == 10.0
    assert facts["payload_bytes"] == 1375 and facts["payload_bitrate"] == 1100.0 == facts["code_bitrate"]
    assert facts["framing_bytes"] == 30 and facts["overhead"] <= 0.03
    assert facts["file_bytes"] == (tmp_path / "s.mimi").stat().st_size and facts["intact"] is True
    text = run_mimi("info", str(tmp_path / "s.mimi"))
    assert text.returncode == 0
    out = text.stdout.decode()
    assert "1,100 bit/s of codes (packets carry 1,100 bit/s)" in out
    assert "packet overhead 30 (2.18% of payload)" in out
    assert "10.00 s (240,000 samples at 24000 Hz)" in out
    assert "integrity   ok" in out


def test_codebook_counts_through_the_cli(model, recordings, tmp_path) -> None:
    src = recordings["22k_flac"]
    wav = load_audio(src).wav
    full = reference_codes(model, wav, 32)
    for k in (1, 32):
        out = tmp_path / f"q{k}.mimi"
        proc = run_mimi("encode", str(src), str(out), "--codebooks", str(k), *WEIGHTS)
        assert proc.returncode == 0, proc.stderr.decode()
        data = read_mimi(out)
        assert data.header.num_codebooks == k
        np.testing.assert_array_equal(data.codes, full[:k])
    # every count 1..32 of the model's real codes goes through a .mimi file unchanged
    for k in range(1, 33):
        buf = io.BytesIO()
        write_mimi(buf, full[:k], model="tiny", num_samples=len(wav))
        back = read_mimi(io.BytesIO(buf.getvalue()))
        assert back.header.num_codebooks == k and back.intact
        np.testing.assert_array_equal(back.codes, full[:k])


def test_roundtrip_prints_bitrate_and_size(recordings, tmp_path) -> None:
    src = recordings["24k_mp3"]
    proc = run_mimi("roundtrip", str(src), str(tmp_path / "rt.wav"), "-q", "16", *WEIGHTS)
    assert proc.returncode == 0, proc.stderr.decode()
    line = proc.stdout.decode()
    n = len(load_audio(src).wav)
    frames = -(-n // 1920)
    sizes = [min(25, frames - i) for i in range(0, frames, 25)]
    payload = sum(-(-f * 16 * 11 // 8) for f in sizes)
    assert f"16 codebooks x 11 bits, {frames} frames: 2,200 bit/s of codes" in line
    assert f"payload {payload:,} + framing {5 * len(sizes) + 5}" in line
    assert f"({n:,} samples at 24000 Hz)" in line
    assert sf.info(str(tmp_path / "rt.wav")).frames == n
    assert list(tmp_path.iterdir()) == [tmp_path / "rt.wav"]  # no .mimi or temp file left behind


def test_file_coding_leaves_numba_unloaded(recordings, tmp_path) -> None:
    """`mimi roundtrip` pauses the numba kernels as `model.encode` and `model.decode` do: a
    file's chunks gain nothing from them, and loading them cost every run ~1 s and ~110 MB."""
    script = ("import sys\nfrom mimi_moshi_cli.mimi import main\n"
              "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
              "print('numba loaded:', 'numba' in sys.modules)")
    out = tmp_path / "out.wav"
    proc = subprocess.run([sys.executable, "-c", script, "roundtrip", str(recordings["24k_mp3"]), str(out), *WEIGHTS],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("numba loaded: False"), proc.stdout
    assert sf.info(out).frames > 0
