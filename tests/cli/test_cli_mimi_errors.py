"""`mimi` error cases through subprocess: exit code 2, one red line naming the problem (and the
byte offset for a damaged .mimi), no traceback, no output or temporary file left behind, and
an existing output never clobbered without --force."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from safetensors.numpy import load_file, save_file

from cliutil import FIXTURES, MIMI, WEIGHTS, assert_fails, run_mimi

from mimi_codec.bitstream import read_mimi

@pytest.fixture(scope="module")
def good_mimi(tmp_path_factory, speech) -> Path:
    path = tmp_path_factory.mktemp("mimi") / "good.mimi"
    proc = run_mimi("encode", str(speech), str(path), *WEIGHTS)
    assert proc.returncode == 0, proc.stderr.decode()
    return path


def only(folder: Path, *names: str) -> None:
    """The folder holds exactly these files (no output, no temporary .part file)."""
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)


def test_encode_missing_input(tmp_path) -> None:
    assert_fails(run_mimi("encode", str(tmp_path / "nope.wav"), str(tmp_path / "o.mimi"), *WEIGHTS),
                 f"input {tmp_path / 'nope.wav'} does not exist")
    only(tmp_path)


def test_encode_empty_file(tmp_path) -> None:
    (tmp_path / "empty.wav").write_bytes(b"")
    assert_fails(run_mimi("encode", str(tmp_path / "empty.wav"), str(tmp_path / "o.mimi"), *WEIGHTS),
                 "empty.wav: empty file (0 bytes)")
    only(tmp_path, "empty.wav")


def test_encode_no_samples(tmp_path) -> None:
    sf.write(tmp_path / "silence.wav", np.zeros(0, dtype=np.float32), 16000)
    assert_fails(run_mimi("encode", str(tmp_path / "silence.wav"), str(tmp_path / "o.mimi"), *WEIGHTS),
                 "silence.wav: empty audio (0 samples)")
    only(tmp_path, "silence.wav")


def test_encode_not_audio_in_a_batch(tmp_path, speech) -> None:
    """One bad input in a batch: nothing at all is written."""
    (tmp_path / "notes.mp3").write_text("not an mp3\n" * 100)
    out = tmp_path / "out"
    proc = run_mimi("encode", str(speech), str(tmp_path / "notes.mp3"), "-o", str(out), *WEIGHTS)
    assert_fails(proc, "notes.mp3: not an audio file libsndfile can read")
    assert not out.exists() or list(out.iterdir()) == []


def test_encode_output_exists_then_force(tmp_path, speech, good_mimi) -> None:
    out = tmp_path / "o.mimi"
    out.write_bytes(b"precious")
    assert_fails(run_mimi("encode", str(speech), str(out), *WEIGHTS),
                 f"output {out} already exists (use --force to overwrite)")
    assert out.read_bytes() == b"precious"
    proc = run_mimi("encode", str(speech), str(out), "--force", "--quiet", *WEIGHTS)
    assert proc.returncode == 0 and proc.stderr == b"" and proc.stdout == b""
    assert out.read_bytes() == good_mimi.read_bytes()
    only(tmp_path, "o.mimi")


def test_encode_bad_options(tmp_path, speech) -> None:
    proc = run_mimi("encode", str(speech), str(tmp_path / "o.mimi"), "-q", "33", *WEIGHTS)
    assert proc.returncode == 2 and "33 is not in the range 1<=x<=32" in proc.stderr.decode()
    proc = run_mimi("encode", str(speech), str(speech), str(tmp_path / "o.mimi"), *WEIGHTS)
    assert proc.returncode == 2 and "several inputs with -o DIR" in proc.stderr.decode()
    assert_fails(run_mimi("encode", str(speech), str(tmp_path / "o.mimi"), "--weights", str(tmp_path / "w.st")),
                 f"weights file {tmp_path / 'w.st'} does not exist")
    assert_fails(run_mimi("encode", str(speech), str(tmp_path / "o.mimi"), *WEIGHTS, "--device", "warp"),
                 "--device 'warp': not a torch device")
    only(tmp_path)


def _damaged(good: bytes, tmp_path: Path, name: str, blob: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(blob)
    return path


def _first_packet(blob: bytes) -> int:
    return 7 + struct.unpack(">H", blob[5:7])[0]


def test_decode_corrupt_packet_names_the_offset(tmp_path, good_mimi) -> None:
    blob = good_mimi.read_bytes()
    p1 = _first_packet(blob) + 280  # second packet
    bad = _damaged(blob, tmp_path, "bad.mimi", blob[: p1 + 9] + bytes([blob[p1 + 9] ^ 0x40]) + blob[p1 + 10 :])
    line = assert_fails(run_mimi("decode", str(bad), str(tmp_path / "o.wav"), *WEIGHTS),
                        f"{bad}: CRC mismatch in packet 1", f"(at byte {p1})")
    assert "stored" in line and "computed" in line
    only(tmp_path, "bad.mimi")


def test_decode_truncated_and_salvage(tmp_path, good_mimi) -> None:
    blob = good_mimi.read_bytes()
    p1 = _first_packet(blob) + 280
    cut = _damaged(blob, tmp_path, "cut.mimi", blob[: p1 + 100])
    assert_fails(run_mimi("decode", str(cut), str(tmp_path / "o.wav"), *WEIGHTS),
                 "stream cut short: packet 1 (13 frames) needs 148 bytes, only 100 left", f"(at byte {p1})")
    only(tmp_path, "cut.mimi")
    # --salvage decodes the 25 frames of the intact first packet, and says so
    proc = run_mimi("decode", str(cut), str(tmp_path / "o.wav"), "--salvage", *WEIGHTS)
    assert proc.returncode == 0, proc.stderr.decode()
    assert "warning:" in proc.stderr.decode() and "decoded the 25 intact frames" in proc.stderr.decode()
    assert sf.info(str(tmp_path / "o.wav")).frames == 25 * 1920
    # info prints what it could read, then fails
    proc = run_mimi("info", str(cut))
    assert proc.returncode == 2
    assert "integrity   DAMAGED: " in proc.stdout.decode() and "25 intact frames" in proc.stdout.decode()
    assert_fails(proc, "stream cut short", f"(at byte {p1})")


def test_decode_missing_end_packet_or_trailing_bytes(tmp_path, good_mimi) -> None:
    blob = good_mimi.read_bytes()
    cut = _damaged(blob, tmp_path, "noend.mimi", blob[:-5])
    assert_fails(run_mimi("decode", str(cut), str(tmp_path / "o.wav"), *WEIGHTS),
                 "no end packet after 2 packets", f"(at byte {len(blob) - 5})")
    junk = _damaged(blob, tmp_path, "junk.mimi", blob + b"\x00\x01\x02")
    assert_fails(run_mimi("decode", str(junk), str(tmp_path / "o.wav"), *WEIGHTS),
                 "3 unexpected byte(s) after the end packet", f"(at byte {len(blob)})")
    only(tmp_path, "noend.mimi", "junk.mimi")


def test_decode_unknown_version_and_not_mimi(tmp_path, good_mimi, speech) -> None:
    blob = good_mimi.read_bytes()
    v2 = _damaged(blob, tmp_path, "v2.mimi", blob[:4] + b"\x02" + blob[5:])
    assert_fails(run_mimi("decode", str(v2), str(tmp_path / "o.wav"), *WEIGHTS),
                 "unknown .mimi format version 2 (this reader knows version 1)", "(at byte 4)")
    assert_fails(run_mimi("info", str(v2)), "unknown .mimi format version 2")
    assert_fails(run_mimi("decode", str(speech), str(tmp_path / "o.wav"), *WEIGHTS),
                 "bad magic b'RIFF'", "not a .mimi stream", "(at byte 0)")
    assert_fails(run_mimi("decode", str(tmp_path / "missing.mimi"), str(tmp_path / "o.wav"), *WEIGHTS),
                 "does not exist")
    assert_fails(run_mimi("info", str(tmp_path / "missing.mimi")), "does not exist")
    only(tmp_path, "v2.mimi")


def test_decode_output_exists_then_force(tmp_path, good_mimi) -> None:
    out = tmp_path / "o.wav"
    out.write_bytes(b"keep me")
    assert_fails(run_mimi("decode", str(good_mimi), str(out), *WEIGHTS), "already exists")
    assert out.read_bytes() == b"keep me"
    assert_fails(run_mimi("decode", str(good_mimi), str(tmp_path / "o.xyz"), *WEIGHTS),
                 "unknown audio file extension 'xyz'")
    proc = run_mimi("decode", str(good_mimi), str(out), "--force", *WEIGHTS)
    assert proc.returncode == 0, proc.stderr.decode()
    assert sf.info(str(out)).frames == read_mimi(good_mimi).header.num_samples
    only(tmp_path, "o.wav")


def test_decode_warns_when_weights_differ(tmp_path, good_mimi) -> None:
    tensors = load_file(FIXTURES / "mimi_tiny.safetensors")
    key = sorted(k for k in tensors if k.endswith(".weight"))[0]
    tensors[key] = tensors[key] * 1.01
    save_file(tensors, tmp_path / "other.safetensors")
    other = ["--weights", str(tmp_path / "other.safetensors"), "--config", str(FIXTURES / "mimi_tiny.json")]
    proc = run_mimi("decode", str(good_mimi), str(tmp_path / "o.wav"), *other)
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    model_field = read_mimi(good_mimi).header.model
    assert f"warning: {good_mimi} was made with weights {model_field!r}, decoding with 'other.safetensors@sha256:" in err
    # the same weights under another name are the same model: no warning
    (tmp_path / "copy.safetensors").write_bytes((FIXTURES / "mimi_tiny.safetensors").read_bytes())
    same = ["--weights", str(tmp_path / "copy.safetensors"), "--config", str(FIXTURES / "mimi_tiny.json")]
    proc = run_mimi("decode", str(good_mimi), str(tmp_path / "o2.wav"), *same)
    assert proc.returncode == 0 and "warning" not in proc.stderr.decode()


def test_info_reports_an_intact_file(good_mimi) -> None:
    proc = run_mimi("info", "--json", str(good_mimi))
    assert proc.returncode == 0, proc.stderr.decode()
    facts = json.loads(proc.stdout)
    # 3 s = 72,000 samples = 37.5 frames -> 38 frames in packets of 25 + 13
    assert (facts["frames"], facts["packets"], facts["num_samples"]) == (38, 2, 72000)
    assert facts["payload_bytes"] == 275 + 143 and facts["framing_bytes"] == 15
    assert facts["intact"] is True and facts["error"] is None
    assert facts["file_bytes"] == good_mimi.stat().st_size


def test_binary_output_refused_on_a_terminal(tmp_path, speech, good_mimi) -> None:
    import os
    import pty

    for args, what in [
        (["encode", str(speech), "-", *WEIGHTS], "binary .mimi data"),
        (["decode", str(good_mimi), "-", *WEIGHTS], "binary audio"),
    ]:
        leader, follower = pty.openpty()
        try:
            proc = subprocess.run([MIMI, *args], stdout=follower, stderr=subprocess.PIPE, timeout=300)
        finally:
            os.close(follower)
            os.close(leader)
        assert proc.returncode == 2
        assert f"refusing to write {what} to a terminal" in proc.stderr.decode()


def test_which_model_fields_name_the_same_weights() -> None:
    from mimi_moshi_cli.mimi_common import OFFICIAL_MODEL_ID, model_id
    from mimi_moshi_cli.mimi_decode import _same_weights

    tiny = model_id(str(FIXTURES / "mimi_tiny.safetensors"))
    assert tiny.startswith("mimi_tiny.safetensors@sha256:") and len(tiny.split(":")[-1]) == 12
    assert model_id(None) == OFFICIAL_MODEL_ID == "kyutai/moshiko-pytorch-bf16:tokenizer-e351c8d8-checkpoint125"
    local_official = "tokenizer-e351c8d8-checkpoint125.safetensors@sha256:0123456789ab"
    assert _same_weights(OFFICIAL_MODEL_ID, OFFICIAL_MODEL_ID)
    assert _same_weights(OFFICIAL_MODEL_ID, local_official) and _same_weights(local_official, OFFICIAL_MODEL_ID)
    assert _same_weights(tiny, "renamed.safetensors@" + tiny.split("@")[1])
    assert not _same_weights(tiny, OFFICIAL_MODEL_ID)
    assert not _same_weights("a.safetensors@sha256:111111111111", "a.safetensors@sha256:222222222222")
    assert not _same_weights("something else", OFFICIAL_MODEL_ID)
