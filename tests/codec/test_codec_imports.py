"""`import mimi_codec` stays light: the format, audio I/O and configs need no torch."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
import mimi_codec
from mimi_codec import read_mimi, write_mimi, MimiConfig, load_audio
assert "torch" not in sys.modules, "torch was imported by the light part of mimi_codec"
from mimi_codec import load_mimi, MimiModel, save_mimi
assert "torch" in sys.modules
assert MimiModel.__name__ == "MimiModel" and callable(load_mimi) and callable(save_mimi)
print("ok")
"""


def test_import_does_not_load_torch_until_the_model_is_asked_for():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_unknown_attribute_is_an_attribute_error():
    import mimi_codec

    try:
        mimi_codec.not_a_thing  # noqa: B018
    except AttributeError as e:
        assert "not_a_thing" in str(e)
    else:
        raise AssertionError("expected AttributeError")
