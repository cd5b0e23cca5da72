"""The README's Python examples run as written (with the tiny test model and a real recording),
and so does the quick start's main job (offline, with the model shipped in the package)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import soundfile as sf

README = Path(__file__).resolve().parents[2] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_codec_example_runs(fixtures_dir, data_dir, tmp_path, monkeypatch):
    code = next(b for b in _python_blocks() if "from mimi_codec import" in b)
    assert "load_mimi()" in code and '"talk.mp3"' in code
    tiny = (f'load_mimi(weights={str(fixtures_dir / "mimi_tiny.safetensors")!r}, '
            f'config={str(fixtures_dir / "mimi_tiny.json")!r})')
    code = code.replace("load_mimi()", tiny).replace('"talk.mp3"', repr(str(data_dir / "p240_00000.mp3")))
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the README's own example
    codes, out, pcm = scope["codes"], scope["out"], scope["pcm"]
    assert codes.shape[:2] == (1, 8) and out.shape[-1] == codes.shape[-1] * 1920
    assert pcm.shape == (1, 1, 1920)
    assert (tmp_path / "talk.mimi").stat().st_size > 0


def test_readme_lm_example_runs(fixtures_dir):
    code = next(b for b in _python_blocks() if "from moshi_lm import" in b)
    assert "load_moshi()" in code
    f = fixtures_dir
    tiny = (f"load_moshi(lm_weights={str(f / 'moshi_tiny.safetensors')!r}, lm_config={str(f / 'moshi_tiny.json')!r}, "
            f"mimi_weights={str(f / 'mimi_tiny.safetensors')!r}, mimi_config={str(f / 'mimi_tiny.json')!r}, "
            f"tokenizer={str(f / 'tokenizer_tiny.model')!r})")
    import torch

    scope: dict = {"user_frames": [torch.randn(1, 1, 1920, generator=torch.Generator().manual_seed(i)) * 0.1
                                   for i in range(3)]}
    exec(compile(code.replace("load_moshi()", tiny), "README.md", "exec"), scope)  # noqa: S102
    frame = scope["frame"]
    assert frame.pcm.shape == (1, 1, 1920) and frame.tokens.shape == (1, 9, 1)  # the last of 3 steps


def test_readme_main_job_runs_offline_with_the_shipped_model(tmp_path):
    """The quick start's `mimi roundtrip ... --model small` runs as written, with no network."""
    install = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)[0].strip()
    job = install.split(" && ")[-1]
    assert job == "mimi roundtrip tests/data/p240_00000.mp3 out.wav --model small"
    args = job.split()[1:]
    args[args.index("out.wav")] = str(tmp_path / "out.wav")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([str(Path(sys.executable).with_name("mimi")), *args], capture_output=True,
                          cwd=README.parent, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    assert "1,100 bit/s of codes" in proc.stdout.decode()
    assert len(sf.read(tmp_path / "out.wav")[0]) == len(sf.read(README.parent / "tests/data/p240_00000.mp3")[0])
