"""The README's Python example runs as written (with the tiny test model and a real recording)."""

from __future__ import annotations

import re
from pathlib import Path

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
