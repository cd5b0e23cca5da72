"""`--decoder-precision fp16` on `mimi decode`, `roundtrip` and `bench`: same codes, audio
close to the fp32 decode, a bad value refused with exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from cliutil import WEIGHTS, run_mimi

from mimi_codec.modules import gemm

pytestmark = pytest.mark.skipif(not gemm.fp16_available(), reason="this PyTorch build has no FBGEMM")


def test_decode_fp16_is_close_to_fp32(tmp_path, speech) -> None:
    src, mimi = speech, tmp_path / "in.mimi"
    assert run_mimi("encode", str(src), str(mimi), *WEIGHTS, "--quiet").returncode == 0
    outs = {}
    for prec in ("fp32", "fp16"):
        out = tmp_path / f"{prec}.wav"
        proc = run_mimi("decode", str(mimi), str(out), *WEIGHTS, "--decoder-precision", prec, "--quiet")
        assert proc.returncode == 0, proc.stderr.decode()
        outs[prec], _ = sf.read(out, dtype="float32")
    err = outs["fp16"] - outs["fp32"]
    assert np.abs(err).max() > 0  # the fp16 kernels ran
    assert 10 * np.log10(np.sum(outs["fp32"] ** 2) / np.sum(err ** 2)) > 40


def test_roundtrip_and_bench_take_it(tmp_path, speech) -> None:
    src = speech
    proc = run_mimi("roundtrip", str(src), str(tmp_path / "out.wav"), *WEIGHTS, "--decoder-precision", "fp16")
    assert proc.returncode == 0, proc.stderr.decode()
    proc = run_mimi("bench", *WEIGHTS, "--seconds", "0.4", "--decoder-precision", "fp16", "--json")
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout)["decoder_fp16"] == 1.0


def test_bad_value_exits_2(tmp_path) -> None:
    proc = run_mimi("decode", "x.mimi", str(tmp_path / "o.wav"), "--decoder-precision", "int4")
    assert proc.returncode == 2
    assert "int4" in proc.stderr.decode() and "fp16" in proc.stderr.decode()
