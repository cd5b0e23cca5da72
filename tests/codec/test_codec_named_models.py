"""`load_mimi(model="small")`: the codec shipped in the package loads by name, offline, with
exactly the shipped tensors and config; bad names and mixed choices are refused by name."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from mimi_codec import MimiConfig, load_mimi
from mimi_codec.checkpoint import official_state_dict
from mimi_codec.named_models import DATA_DIR, named_model, named_models


@pytest.fixture(scope="module")
def small():
    return load_mimi(model="small")


def test_small_is_shipped_as_float16_in_the_official_layout() -> None:
    assert "small" in named_models()
    nm = named_model("small")
    assert nm.weights == DATA_DIR / "small" / "model.safetensors" and nm.model_id == "mimi-codec:small"
    assert {t.dtype for t in load_file(str(nm.weights)).values()} == {torch.float16}
    MimiConfig.from_dict(json.loads(nm.config.read_text(encoding="utf-8")))  # official schema, no unknown keys


def test_load_mimi_by_name_loads_the_shipped_weights(small) -> None:
    nm = named_model("small")
    assert small.config == MimiConfig.load(nm.config)
    assert small.config != MimiConfig.load(None)  # not the official architecture
    stored = load_file(str(nm.weights))
    ours = official_state_dict(small)
    assert sorted(ours) == sorted(stored)
    for key, tensor in stored.items():
        assert ours[key].dtype == torch.float32
        torch.testing.assert_close(ours[key], tensor.float(), rtol=0, atol=0, msg=key)
    # and the same model as naming the files
    by_path = load_mimi(nm.weights, nm.config)
    wav = torch.randn(1, 1, 4 * 1920, generator=torch.Generator().manual_seed(0)) * 0.1
    torch.testing.assert_close(small.encode(wav), by_path.encode(wav), rtol=0, atol=0)


def test_load_mimi_by_name_refuses_unknown_names_and_mixed_choices(fixtures_dir) -> None:
    with pytest.raises(ValueError, match=r"model 'big': no such model in this package; shipped models: \[.*'small'"):
        load_mimi(model="big")
    with pytest.raises(ValueError, match="give either a model name or weights/config, not both"):
        load_mimi(fixtures_dir / "mimi_tiny.safetensors", model="small")
    with pytest.raises(ValueError, match="give either a model name or weights/config, not both"):
        load_mimi(config=fixtures_dir / "mimi_tiny.json", model="small")
