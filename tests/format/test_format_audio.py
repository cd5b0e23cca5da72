"""mimi_codec.audio: any libsndfile input -> mono float32 24 kHz (soxr), and back out."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from mimi_codec.audio import format_for_name, load_audio, probe_audio, resample, save_audio

RECORDINGS = [
    ("1320_00000.mp3", 16000),
    ("p240_00000.mp3", 24000),
    ("ljspeech/LJ001-0001.flac", 22050),
    ("bria.mp3", 44100),
    ("metavoice_audio.wav", 48000),
]


@pytest.mark.parametrize(("name", "rate"), RECORDINGS)
def test_load_real_recordings(data_dir, name: str, rate: int) -> None:
    raw, raw_rate = sf.read(data_dir / name, dtype="float32")
    audio = load_audio(data_dir / name)
    assert raw_rate == rate == audio.source_sample_rate
    assert audio.sample_rate == 24000 and audio.source_channels == 1
    assert audio.source_num_samples == len(raw)
    assert audio.wav.dtype == np.float32 and audio.wav.ndim == 1
    assert abs(len(audio.wav) - len(raw) * 24000 / rate) <= 1
    assert audio.duration == pytest.approx(len(raw) / rate, abs=1 / 24000)
    # the same signal: equal energy (resampling a speech band keeps it to <1%)
    assert np.mean(audio.wav**2) == pytest.approx(np.mean(raw**2), rel=0.01)
    if rate == 24000:
        np.testing.assert_array_equal(audio.wav, raw)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_resampler_is_accurate(rate: int) -> None:
    """A 1 kHz tone resampled to 24 kHz matches the tone sampled at 24 kHz to < 1e-3."""
    t_in = np.arange(rate) / rate
    out = resample(np.sin(2 * np.pi * 1000 * t_in).astype(np.float32), rate, 24000)
    assert len(out) == 24000
    expected = np.sin(2 * np.pi * 1000 * np.arange(24000) / 24000)
    middle = slice(2400, 21600)  # away from the edges' filter transients
    assert np.max(np.abs(out[middle] - expected[middle])) < 1e-3


def test_stereo_is_averaged_to_mono(tmp_path) -> None:
    t = np.arange(24000) / 24000
    left = 0.5 * np.sin(2 * np.pi * 300 * t)
    right = 0.25 * np.sin(2 * np.pi * 500 * t)
    sf.write(tmp_path / "st.wav", np.stack([left, right], axis=1), 24000, subtype="FLOAT")
    audio = load_audio(tmp_path / "st.wav")
    assert audio.source_channels == 2
    np.testing.assert_allclose(audio.wav, (left + right) / 2, atol=1e-7)


def test_load_from_a_stream_of_bytes(data_dir) -> None:
    blob = (data_dir / "1320_00000.mp3").read_bytes()
    from_bytes = load_audio(io.BytesIO(blob), name="<stdin>")
    np.testing.assert_array_equal(from_bytes.wav, load_audio(data_dir / "1320_00000.mp3").wav)
    assert from_bytes.name == "<stdin>"


def test_load_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="input .*nope.wav does not exist"):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        load_audio(tmp_path)
    (tmp_path / "zero.wav").write_bytes(b"")
    with pytest.raises(ValueError, match="zero.wav: empty file"):
        load_audio(tmp_path / "zero.wav")
    sf.write(tmp_path / "silent.wav", np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(ValueError, match="silent.wav: empty audio \\(0 samples\\)"):
        load_audio(tmp_path / "silent.wav")
    (tmp_path / "notes.wav").write_text("these are not the samples you are looking for\n" * 20)
    with pytest.raises(ValueError, match="notes.wav: not an audio file libsndfile can read"):
        load_audio(tmp_path / "notes.wav")
    sf.write(tmp_path / "nan.wav", np.array([0.0, np.nan, 0.1], dtype=np.float32), 24000, subtype="FLOAT")
    with pytest.raises(ValueError, match="nan.wav: audio contains NaN"):
        load_audio(tmp_path / "nan.wav")
    with pytest.raises(ValueError, match="<stdin>: not an audio file"):
        load_audio(io.BytesIO(b"garbage" * 100), name="<stdin>")


def test_save_24k_wav_and_resampled(tmp_path) -> None:
    wav = (0.3 * np.sin(2 * np.pi * 440 * np.arange(48000) / 24000)).astype(np.float32)
    assert save_audio(tmp_path / "a.wav", wav) == 48000
    back, rate = sf.read(tmp_path / "a.wav", dtype="float32")
    info = sf.info(tmp_path / "a.wav")
    assert (rate, info.subtype, info.format) == (24000, "PCM_16", "WAV")
    np.testing.assert_allclose(back, wav, atol=1 / 32768)
    # back to 44.1 kHz at an exact length
    assert save_audio(tmp_path / "b.flac", wav, out_rate=44100, num_samples=88201) == 88201
    back, rate = sf.read(tmp_path / "b.flac", dtype="float32")
    assert rate == 44100 and len(back) == 88201 and back[-1] == 0.0
    expected = 0.3 * np.sin(2 * np.pi * 440 * np.arange(88200) / 44100)
    assert np.max(np.abs(back[4410:80000] - expected[4410:80000])) < 2e-3


def test_save_to_a_pipe_like_stream() -> None:
    class Pipe(io.RawIOBase):  # write-only, not seekable, like stdout on a pipe
        def __init__(self) -> None:
            self.data = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, b) -> int:
            self.data += bytes(b)
            return len(b)

    pipe = Pipe()
    wav = np.linspace(-0.5, 0.5, 1000, dtype=np.float32)
    save_audio(pipe, wav)
    back, rate = sf.read(io.BytesIO(bytes(pipe.data)), dtype="float32")
    assert rate == 24000
    np.testing.assert_allclose(back, wav, atol=1 / 32768)


def test_clipping_and_formats(tmp_path) -> None:
    save_audio(tmp_path / "loud.wav", np.array([2.0, -3.0, 0.5], dtype=np.float32))
    back, _ = sf.read(tmp_path / "loud.wav", dtype="float32")
    np.testing.assert_allclose(back, [32767 / 32768, -1.0, 0.5], atol=1 / 32768)
    assert format_for_name("x.WAV") == "WAV" and format_for_name("x.ogg") == "OGG"
    with pytest.raises(ValueError, match="unknown audio file extension 'txt'"):
        format_for_name("out.txt")
    with pytest.raises(ValueError, match="output sample rate 0"):
        save_audio(tmp_path / "z.wav", np.zeros(10, dtype=np.float32), out_rate=0)


def test_probe_refuses_what_load_refuses(tmp_path, data_dir) -> None:
    for name, _ in RECORDINGS:
        assert probe_audio(data_dir / name) is None
    (tmp_path / "zero.mp3").write_bytes(b"")
    (tmp_path / "text.flac").write_text("flac? no\n" * 50)
    sf.write(tmp_path / "none.wav", np.zeros(0, dtype=np.float32), 8000)
    cases = [
        (tmp_path / "missing.wav", FileNotFoundError, "does not exist"),
        (tmp_path, IsADirectoryError, "is a folder"),
        (tmp_path / "zero.mp3", ValueError, "zero.mp3: empty file"),
        (tmp_path / "text.flac", ValueError, "text.flac: not an audio file libsndfile can read"),
        (tmp_path / "none.wav", ValueError, "none.wav: empty audio"),
    ]
    for path, error, message in cases:
        with pytest.raises(error, match=message):
            probe_audio(path)
        with pytest.raises(error, match=message):
            load_audio(path)
