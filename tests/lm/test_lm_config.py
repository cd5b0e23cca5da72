"""LMConfig: the official schema in, unknown keys out, defaults = Moshi 7B."""

from __future__ import annotations

import json

import pytest

from moshi_lm.config import LMConfig, as_config, split_repo_config


def test_tiny_json_round_trip(fixtures_dir):
    raw = json.loads((fixtures_dir / "moshi_tiny.json").read_text())
    cfg = LMConfig.from_dict(raw)
    assert (cfg.dim, cfg.num_layers, cfg.text_card, cfg.depformer_dim) == (64, 2, 1000, 32)
    assert cfg.delays == tuple(raw["delays"])
    assert LMConfig.from_dict(cfg.to_dict()) == cfg
    assert as_config(fixtures_dir / "moshi_tiny.json") == cfg


def test_defaults_are_the_official_7b(fixtures_dir):
    manifest = json.loads((fixtures_dir / "moshi_official_manifest.json").read_text())
    assert LMConfig.from_dict(manifest["config"]) == LMConfig()
    assert as_config(None) == LMConfig()


def test_unknown_key_rejected():
    with pytest.raises(ValueError, match="unknown LM config keys: \\['dimm'\\]"):
        LMConfig.from_dict({"dimm": 4096})


def test_unsupported_feature_and_bad_values_rejected():
    with pytest.raises(ValueError, match="conditioners"):
        LMConfig.from_dict({"conditioners": {"x": 1}})
    with pytest.raises(ValueError, match="delays has 3 entries"):
        LMConfig.from_dict({"delays": [0, 1, 1]})
    with pytest.raises(ValueError, match="norm 'layer_norm'"):
        LMConfig.from_dict({"norm": "layer_norm"})


def test_repo_config_json_keys(fixtures_dir):
    """A newer repository's config.json: LM keys plus file names and generation settings."""
    raw = json.loads((fixtures_dir / "moshi_tiny.json").read_text())
    raw.update({"moshi_name": "model.safetensors", "mimi_name": "mimi.safetensors",
                "tokenizer_name": "tok.model", "model_type": "moshi", "lm_gen_config": {"temp": 0.7},
                "depformer_causal": True, "conditioners": None, "fuser": None})
    cfg = LMConfig.from_dict(raw)
    assert cfg.dim == 64
    lm, repo = split_repo_config(raw)
    assert repo["mimi_name"] == "mimi.safetensors" and "dim" in lm and "moshi_name" not in lm


def test_frozen():
    with pytest.raises(AttributeError):
        LMConfig().dim = 3  # type: ignore[misc]
