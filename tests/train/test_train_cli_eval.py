"""Quality metrics, reference codecs, and `mimi train` / `mimi eval` run as a user runs them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from forkrun import run_command
from trainutil import tiny_train_config, write_tone_data

from mimi_codec.audio import load_audio
from mimi_codec.train.evaluate import align, codec2_roundtrip, opus_roundtrip, quality

pytest.importorskip("pesq")
pytest.importorskip("pystoi")


def _speech(data_dir: Path) -> np.ndarray:
    return load_audio(data_dir / "p260_00000.mp3").wav


def test_align_finds_the_delay() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(4000).astype(np.float32)
    late = np.concatenate([np.zeros(37, np.float32), ref])
    np.testing.assert_array_equal(align(ref, late, 100)[:-37], ref[:-37])
    early = ref[25:]
    np.testing.assert_array_equal(align(ref, early, 100)[25:], ref[25:])


def test_quality_of_identity_and_noise(data_dir: Path) -> None:
    x = _speech(data_dir)
    same = quality(x, x, visqol=False)
    assert same.pesq is not None and same.pesq > 4.5
    assert same.stoi == pytest.approx(1.0, abs=1e-6)
    assert same.mel_distance == 0.0
    noisy = x + 0.05 * np.random.default_rng(0).standard_normal(len(x)).astype(np.float32)
    worse = quality(x, noisy, visqol=False)
    assert worse.pesq is not None and worse.pesq < 2.5
    assert worse.stoi is not None and worse.stoi < 0.95
    assert worse.mel_distance > 0.1


@pytest.mark.skipif(shutil.which("c2enc") is None or shutil.which("opusenc") is None,
                    reason="codec2 / opus-tools not installed (apt-get install codec2 opus-tools)")
def test_reference_codecs_round_trip(data_dir: Path) -> None:
    x = _speech(data_dir)
    c2 = quality(x, codec2_roundtrip(x), visqol=False)
    op = quality(x, opus_roundtrip(x), visqol=False)
    # both are intelligible but lossy, Opus at 6 kbit/s well above Codec2 at 1.2 kbit/s
    assert c2.stoi is not None and op.stoi is not None and c2.pesq is not None and op.pesq is not None
    assert 0.6 < c2.stoi < op.stoi < 0.99
    assert 1.0 < c2.pesq < op.pesq < 4.0


# what `mimi train` and `mimi eval` import before they read their arguments
PRELOAD = ("torch", "rich.progress", "rich.table", "mimi_codec.train", "mimi_codec.train.evaluate",
           "mimi_moshi_cli.mimi", "mimi_moshi_cli.train")


def _mimi(*args: str) -> subprocess.CompletedProcess[str]:
    """`mimi ARGS...` in a new process (forked from a warm interpreter: tests/forkrun.py), one thread."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = run_command("mimi_moshi_cli.mimi:main", ["mimi", *args], PRELOAD, env=env, timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def test_cli_train_resume_and_eval(tmp_path: Path) -> None:
    data = write_tone_data(tmp_path / "data")
    cfg = tmp_path / "train.json"
    cfg.write_text(json.dumps(tiny_train_config(steps=6, checkpoint_every=3)))
    out = tmp_path / "run"
    r = _mimi("train", "--config", str(cfg), "--data", str(data), "--out", str(out), "--steps", "3", "--quiet",
              "--threads", "1")
    assert r.returncode == 0, r.stderr
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [3]
    again = _mimi("train", "--config", str(cfg), "--data", str(data), "--out", str(out), "--quiet")
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr
    r = _mimi("train", "--config", str(cfg), "--data", str(data), "--out", str(out), "--resume", "--quiet")
    assert r.returncode == 0, r.stderr
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [3, 5, 6]
    report = tmp_path / "scores.json"
    r = _mimi("eval", "--data", str(data), "--weights", str(out / "model.safetensors"),
              "--config", str(out / "config.json"), "-q", "4", "--no-visqol", "--json", str(report))
    assert r.returncode == 0, r.stderr
    scores = json.loads(report.read_text())
    name = "mimi:model.safetensors"
    assert scores["summary"][name]["files"] == 2
    assert scores["summary"][name]["bitrate"] == 4 * 5 * 12.5  # 4 codebooks of 32 entries
    assert all(row["mel_distance"] > 0 and row["stoi"] is not None for row in scores["files"])
    assert "PESQ" in r.stdout


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps({"optim": {"lr": 1, "momentum": 0.9}}))
    r = _mimi("train", "--config", str(cfg), "--data", str(tmp_path), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "unknown keys ['momentum']" in r.stderr and "Traceback" not in r.stderr
    r = _mimi("eval", "--data", str(tmp_path), "--model", "no-such-model")
    assert r.returncode == 2 and "no-such-model" in r.stderr and "Traceback" not in r.stderr


def test_word_error_rate_and_transcripts(tmp_path: Path) -> None:
    from mimi_codec.train.evaluate import read_transcripts, word_error_rate

    assert word_error_rate("In being comparatively modern.", "in being comparatively modern") == 0.0
    assert word_error_rate("a b c d", "a x c") == 0.5  # one substitution, one deletion
    assert word_error_rate("a b", "a b c d") == 1.0  # two insertions
    with pytest.raises(ValueError, match="no words"):
        word_error_rate("...", "a")
    f = tmp_path / "t.txt"
    f.write_text("LJ001-0002|in being comparatively modern.|in being comparatively modern.\nclip.wav\tHello there\n")
    assert read_transcripts(f) == {"LJ001-0002": "in being comparatively modern.", "clip": "Hello there"}


def test_cli_eval_reports_wer(data_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("pocketsphinx")
    from mimi_codec.train import TrainConfig, Trainer

    run = tmp_path / "run"
    Trainer(TrainConfig.from_dict(tiny_train_config(steps=1)), [write_tone_data(tmp_path / "d")], run).run()
    clip = data_dir / "ljspeech" / "LJ001-0002.flac"
    report = tmp_path / "s.json"
    r = _mimi("eval", "--data", str(clip), "--weights", str(run / "model.safetensors"), "--config",
              str(run / "config.json"), "-q", "4", "--no-visqol", "--transcripts",
              str(data_dir / "ljspeech" / "metadata.csv"), "--json", str(report))
    assert r.returncode == 0, r.stderr
    summary = json.loads(report.read_text())["summary"]
    # the recogniser gets most of the original (3 of 4 words here), little from an untrained codec
    assert summary["original"]["wer"] <= 0.5
    assert summary["mimi:model.safetensors"]["wer"] >= 0.75


@pytest.mark.skipif(shutil.which("c2enc") is None or shutil.which("opusenc") is None,
                    reason="codec2 / opus-tools not installed (apt-get install codec2 opus-tools)")
def test_report_scores_new_snapshots_and_merges_earlier_rows(fixtures_dir: Path, tmp_path: Path) -> None:
    from mimi_codec.train.report import main as report_main

    run = tmp_path / "run"
    (run / "snapshots").mkdir(parents=True)
    shutil.copyfile(fixtures_dir / "mimi_tiny.json", run / "config.json")
    for step in (10, 20, 30):
        shutil.copyfile(fixtures_dir / "mimi_tiny.safetensors", run / "snapshots" / f"model_step{step:07d}.safetensors")
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"files": [], "baselines": {}, "snapshots": [
        {"step": 5, "pesq": 1.0, "stoi": 0.1, "visqol": None, "mel_distance": 3.0},
        {"step": 20, "pesq": 9.0, "stoi": 9.0, "visqol": None, "mel_distance": 9.0}]}))
    data = write_tone_data(tmp_path / "data", seconds=1.0)
    out = tmp_path / "docs"
    report_main([str(run), "--data", str(data), "--out", str(out), "--no-visqol", "--min-step", "20",
                 "--merge", str(old)])
    res = json.loads((out / "small_quality_vs_steps.json").read_text())
    assert [s["step"] for s in res["snapshots"]] == [5, 20, 30]  # the old row of step 20 is replaced
    assert res["snapshots"][0]["pesq"] == 1.0 and res["snapshots"][1]["stoi"] < 1.0
    assert (out / "small_quality_vs_steps.png").stat().st_size > 0
