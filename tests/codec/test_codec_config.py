"""Config dataclasses: official JSON schema in, unknown keys out."""

from __future__ import annotations

import dataclasses
import json

import pytest

from mimi_codec import PRESETS, MimiConfig, SeanetConfig, TransformerConfig


def test_default_is_official(fixtures_dir) -> None:
    manifest = json.loads((fixtures_dir / "mimi_official_manifest.json").read_text())
    cfg = MimiConfig.from_dict(manifest["config"])
    assert cfg == MimiConfig() == PRESETS["mimi"]
    assert cfg.to_dict() == {**manifest["config"], "quantizer": {**manifest["config"]["quantizer"], "n_q_semantic": 1}}
    assert (cfg.frame_size, cfg.encoder_frame_rate, cfg.resample_stride, cfg.seanet.hop_length) == (1920, 25.0, 2, 960)


def test_tiny_json(fixtures_dir) -> None:
    path = fixtures_dir / "mimi_tiny.json"
    cfg = MimiConfig.load(path)
    assert cfg == MimiConfig.from_dict(json.loads(path.read_text())) == MimiConfig.load(str(path))
    assert cfg.seanet.dimension == 64 and cfg.seanet.n_filters == 8
    assert cfg.transformer.d_model == 64 and cfg.transformer.num_layers == 2
    assert cfg.quantizer.dimension == 16 and cfg.seanet.ratios == (8, 6, 5, 4)


def test_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        MimiConfig().sample_rate = 16000  # type: ignore[misc]


@pytest.mark.parametrize("where", ["top", "seanet", "transformer", "quantizer"])
def test_unknown_keys_rejected(where: str) -> None:
    data = MimiConfig().to_dict()
    target = data if where == "top" else data[where]
    target["bogus_key"] = 1
    with pytest.raises(ValueError, match="bogus_key"):
        MimiConfig.from_dict(data)


def test_unsupported_values_rejected() -> None:
    with pytest.raises(ValueError, match="gating"):
        TransformerConfig(gating="silu")
    with pytest.raises(ValueError, match="causal"):
        SeanetConfig(causal=False)
    with pytest.raises(ValueError, match="frame_rate"):
        MimiConfig(frame_rate=10.0)


def test_load_rejects_bad_sources(tmp_path) -> None:
    with pytest.raises(ValueError, match="neither a preset"):
        MimiConfig.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="invalid JSON"):
        MimiConfig.load(bad)
    with pytest.raises(ValueError, match="expected None"):
        MimiConfig.load(3)  # type: ignore[arg-type]
