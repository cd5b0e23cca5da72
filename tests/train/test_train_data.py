"""The training data pipeline: sources, determinism by step, loudness, augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mimi_codec.train.config import DataConfig
from mimi_codec.train.data import SegmentDataset, augment, find_audio

PLAIN = DataConfig(segment_seconds=0.4, batch_size=3, noise_prob=0.0, eq_prob=0.0, reverb_prob=0.0, gain_db=0.0)


def test_sources_folders_files_manifests(data_dir: Path, tmp_path: Path) -> None:
    lj = sorted((data_dir / "ljspeech").glob("*.flac"))
    manifest = tmp_path / "m.txt"
    manifest.write_text(f"# two files\n{lj[0]}\n\n{lj[1]}\n")
    assert find_audio([manifest]) == lj[:2]
    assert find_audio([data_dir / "ljspeech"]) == lj  # metadata.csv is not audio
    assert find_audio([lj[3], data_dir / "ljspeech"]) == lj  # de-duplicated
    rel = tmp_path / "sub"
    rel.mkdir()
    (rel / "r.txt").write_text("../nope.wav\n")
    with pytest.raises(ValueError, match="does not exist"):
        find_audio([rel / "r.txt"])
    with pytest.raises(ValueError, match="no audio files"):
        find_audio([rel])


def test_batches_depend_only_on_seed_and_step(data_dir: Path) -> None:
    cfg = DataConfig(segment_seconds=0.45, batch_size=3)
    a = SegmentDataset([data_dir / "ljspeech"], cfg, seed=1)
    b = SegmentDataset([data_dir / "ljspeech"], cfg, seed=1)
    assert a.segment == 5 * 1920  # 0.45 s rounded down to 5 frames of 80 ms
    x5 = a.batch(5)
    assert x5.shape == (3, 1, 9600) and x5.dtype == torch.float32
    b.batch(0)  # another order of requests gives the same batches
    assert torch.equal(b.batch(5), x5)
    assert not torch.equal(a.batch(6), x5)
    c = SegmentDataset([data_dir / "ljspeech"], cfg, seed=2)
    assert not torch.equal(c.batch(5), x5)


def test_loudness_normalisation(data_dir: Path) -> None:
    ds = SegmentDataset([data_dir / "ljspeech"], PLAIN, seed=0)
    x = ds.batch(0).numpy()[:, 0]
    for seg in x:
        level = 10 * np.log10(np.mean(seg.astype(np.float64) ** 2))
        if np.max(np.abs(seg)) < 0.99:  # not limited by the peak guard
            assert abs(level - PLAIN.loudness_db) < 0.01


def test_augmentations_change_the_signal_as_configured() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(24000) / 24000
    x = 0.1 * np.sin(2 * np.pi * 220 * t) + 0.05 * np.sin(2 * np.pi * 3000 * t)  # EQ changes the balance
    plain = augment(x, PLAIN, np.random.default_rng(1))
    np.testing.assert_allclose(plain, x * 10 ** ((PLAIN.loudness_db - 10 * np.log10(np.mean(x ** 2))) / 20))
    noisy_cfg = DataConfig(noise_prob=1.0, eq_prob=0.0, reverb_prob=0.0, gain_db=0.0, noise_snr_db=(10.0, 10.0))
    noisy = augment(x, noisy_cfg, np.random.default_rng(1))
    noise = noisy - plain
    snr = 10 * np.log10(np.mean(plain ** 2) / np.mean(noise ** 2))
    assert abs(snr - 10.0) < 0.01
    rev = augment(x, DataConfig(noise_prob=0.0, eq_prob=0.0, reverb_prob=1.0, gain_db=0.0), np.random.default_rng(1))
    assert np.max(np.abs(rev - plain)) > 1e-3
    eq_cfg = DataConfig(noise_prob=0.0, eq_prob=1.0, reverb_prob=0.0, gain_db=0.0, eq_db=6.0)
    def balance_db(y: np.ndarray) -> float:  # level of 3 kHz relative to 220 Hz (1 s: 1 Hz bins)
        spec = np.abs(np.fft.rfft(y))
        return 20 * np.log10(spec[3000] / spec[220])

    changes = np.array([balance_db(augment(x, eq_cfg, np.random.default_rng(s))) - balance_db(plain)
                        for s in range(20)])
    assert changes.std() > 2.0  # random tilts of several dB
    assert np.abs(changes).max() <= 12.0 + 1e-6  # never more than boost + cut
    gained = augment(x, DataConfig(noise_prob=0.0, eq_prob=0.0, reverb_prob=0.0, gain_db=6.0), rng)
    ratio = np.max(np.abs(gained)) / np.max(np.abs(plain))
    assert 10 ** (-6 / 20) - 1e-9 <= ratio <= 10 ** (6 / 20) + 1e-9 and abs(ratio - 1) > 1e-6
