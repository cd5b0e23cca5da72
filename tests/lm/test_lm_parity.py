"""The LM computes what kyutai's reference computes, and loads the official layout strictly."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from moshi_lm import LMConfig, LMModel, load_lm
from moshi_lm.loading import official_state_dict


def _defined(ref: torch.Tensor) -> torch.Tensor:
    """Positions the fixture defines (it stores undefined ones as all-zero rows)."""
    return ~(ref == 0).all(dim=-1)


def test_teacher_forced_logits_match_reference(tiny, vectors):
    out = tiny(vectors["tf_codes"].long())
    assert out.logits.shape == (1, 8, 50, 2048) and out.text_logits.shape == (1, 1, 50, 1000)
    for ours, mask, ref in ((out.logits, out.mask, vectors["tf_logits"]),
                            (out.text_logits, out.text_mask, vectors["tf_text_logits"])):
        assert torch.equal(mask, _defined(ref))
        assert torch.isnan(ours[~mask]).all()
        err = (ours[mask] - ref[mask]).abs().max().item()
        print(f"max abs error {err:.2e} over {int(mask.sum())} positions")
        assert err < 1e-5  # measured 4.2e-7 (audio) and 1.2e-7 (text)


def test_default_config_matches_official_manifest(fixtures_dir):
    manifest = json.loads((fixtures_dir / "moshi_official_manifest.json").read_text())
    model = LMModel(LMConfig(), device="meta", dtype=torch.bfloat16)
    ours = {k: list(v.shape) for k, v in official_state_dict(model).items()}
    theirs = {k: v[0] for k, v in manifest["tensors"].items()}
    assert len(ours) == 355
    assert ours == theirs
    assert sum(v.numel() for v in model.parameters()) == manifest["num_float_elements"]


def test_strict_loading_lists_missing_and_unexpected(tmp_path, fixtures_dir):
    state = load_file(fixtures_dir / "moshi_tiny.safetensors")
    state["extra.weight"] = torch.zeros(2)
    del state["text_linear.weight"]
    del state["depformer_in.3.weight"]
    bad = tmp_path / "bad.safetensors"
    save_file(state, bad)
    with pytest.raises(ValueError) as err:
        load_lm(bad, fixtures_dir / "moshi_tiny.json")
    msg = str(err.value)
    assert "missing 2: ['depformer_in.3.weight', 'text_linear.weight']" in msg
    assert "unexpected 1: ['extra.weight']" in msg


def test_wrong_shape_reported(tmp_path, fixtures_dir):
    state = load_file(fixtures_dir / "moshi_tiny.safetensors")
    state["out_norm.alpha"] = torch.ones(1, 1, 65)
    bad = tmp_path / "bad.safetensors"
    save_file(state, bad)
    with pytest.raises(ValueError, match=r"out_norm.alpha \(1, 1, 65\) \(expected \(1, 1, 64\)\)"):
        load_lm(bad, fixtures_dir / "moshi_tiny.json")


def test_missing_file_is_an_oserror(fixtures_dir, tmp_path):
    with pytest.raises(FileNotFoundError):
        load_lm(tmp_path / "nope.safetensors", fixtures_dir / "moshi_tiny.json")


def test_loads_into_requested_dtype(fixtures_dir, vectors, tiny):
    lm16 = load_lm(fixtures_dir / "moshi_tiny.safetensors", fixtures_dir / "moshi_tiny.json", dtype=torch.bfloat16)
    assert {p.dtype for p in lm16.parameters()} == {torch.bfloat16}
    ref = tiny.text_emb.weight
    assert torch.equal(lm16.text_emb.weight, ref.to(torch.bfloat16))
    out = lm16(vectors["tf_codes"].long())
    mask = out.text_mask
    err = (out.text_logits[mask].float() - vectors["tf_text_logits"][mask]).abs().max().item()
    assert err < 0.1  # bf16 rounding only


def test_file_order_independent_values(tiny, fixtures_dir):
    """Every parameter equals the file's tensor bit for bit (our reader vs safetensors')."""
    ref = load_file(fixtures_dir / "moshi_tiny.safetensors")
    ours = official_state_dict(tiny)
    assert set(ours) == set(ref)
    for k, v in ref.items():
        assert torch.equal(ours[k], v), k
