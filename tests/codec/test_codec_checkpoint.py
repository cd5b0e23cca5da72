"""Checkpoint layout: official names load as they are, aliases too, anything else is an error."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import mimi_codec.loaders as loaders
from mimi_codec import MIMI_FILENAME, MimiConfig, MimiModel, load_mimi, official_state_dict, save_mimi
from mimi_codec.checkpoint import official_to_internal


@pytest.fixture(scope="module")
def tiny_path(fixtures_dir):
    return fixtures_dir / "mimi_tiny.safetensors"


@pytest.fixture(scope="module")
def tiny_cfg(fixtures_dir) -> MimiConfig:
    return MimiConfig.load(fixtures_dir / "mimi_tiny.json")


@pytest.fixture(scope="module")
def tiny(tiny_path, tiny_cfg) -> MimiModel:
    return load_mimi(tiny_path, tiny_cfg)


def _wav() -> torch.Tensor:
    return torch.randn(1, 1, 1920 * 4, generator=torch.Generator().manual_seed(3)) * 0.3


@pytest.mark.slow
def test_full_size_layout_matches_official_manifest(fixtures_dir, tmp_path) -> None:
    manifest = json.loads((fixtures_dir / "mimi_official_manifest.json").read_text())
    torch.manual_seed(0)
    model = MimiModel(MimiConfig.from_dict(manifest["config"]))
    sd = official_state_dict(model)
    got = {k: [list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in sd.items()}
    assert len(got) == 318
    assert got == manifest["tensors"]
    assert sum(v.numel() for v in sd.values()) == manifest["num_float_elements"] == 96_151_393
    # A checkpoint written in that layout loads strictly and reproduces the model.
    path = tmp_path / "full.safetensors"
    save_mimi(model, path)
    del sd
    loaded = load_mimi(path)
    wav = torch.randn(1, 1, 1920 * 2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(loaded.encode(wav, 32), model.encode(wav, 32))


def test_saved_checkpoint_has_the_fixture_layout(tiny, tiny_path, tiny_cfg, tmp_path) -> None:
    path = tmp_path / "tiny.safetensors"
    save_mimi(tiny, path)
    saved, original = load_file(str(path)), load_file(str(tiny_path))
    assert saved.keys() == original.keys() and len(saved) == 198
    for k in original:
        assert torch.equal(saved[k], original[k]), k
    again = load_mimi(path, tiny_cfg)
    wav = _wav()
    assert torch.equal(again.encode(wav), tiny.encode(wav))


def test_split_attention_and_legacy_codebook_names(tiny, tiny_path, tiny_cfg, tmp_path) -> None:
    tensors = load_file(str(tiny_path))
    renamed = {}
    legacy = {"embedding_sum": "embed_avg", "cluster_usage": "cluster_size", "_initialized": "inited"}
    for i, (k, v) in enumerate(sorted(tensors.items())):
        k = k.replace("self_attn.in_proj_weight", "self_attn.in_projs.0.weight")
        k = k.replace("self_attn.out_proj.weight", "self_attn.out_projs.0.weight")
        for new, old in legacy.items():
            if k.endswith("._codebook." + new):
                k = k[: -len(new)] + (old if i % 2 else ("embed_sum" if new == "embedding_sum" else old))
        renamed[k] = v
    assert any("in_projs.0" in k for k in renamed) and any(k.endswith(".inited") for k in renamed)
    assert any(k.endswith(".embed_sum") for k in renamed) and any(k.endswith(".embed_avg") for k in renamed)
    path = tmp_path / "legacy.safetensors"
    save_file(renamed, str(path))
    model = load_mimi(path, tiny_cfg)
    wav = _wav()
    assert torch.equal(model.encode(wav, 32), tiny.encode(wav, 32))


def test_missing_and_unexpected_names_are_listed(tiny_path, tiny_cfg, tmp_path) -> None:
    tensors = load_file(str(tiny_path))
    del tensors["decoder.model.14.conv.conv.bias"]
    del tensors["quantizer.rvq_rest.vq.layers.30._codebook.cluster_usage"]
    tensors["encoder.model.99.conv.conv.weight"] = torch.zeros(1)
    tensors["something.else"] = torch.zeros(1)
    path = tmp_path / "broken.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(ValueError) as err:
        load_mimi(path, tiny_cfg)
    msg = str(err.value)
    assert "missing tensors: decoder.model.14.conv.conv.bias, quantizer.rvq_rest.vq.layers.30._codebook.cluster_usage" in msg
    assert "unexpected tensors: encoder.model.99.conv.conv.weight, something.else" in msg


def test_wrong_shape_is_named(tiny_path, tiny_cfg, tmp_path) -> None:
    tensors = load_file(str(tiny_path))
    tensors["upsample.convtr.convtr.convtr.weight"] = torch.zeros(64, 1, 3)
    path = tmp_path / "shape.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(ValueError, match=r"wrong shapes: upsample.convtr.convtr.convtr.weight \(64, 1, 3\) \(expected \(64, 1, 4\)\)"):
        load_mimi(path, tiny_cfg)


def test_same_tensor_twice_is_an_error(tiny_path, tiny_cfg, tmp_path) -> None:
    tensors = load_file(str(tiny_path))
    name = "quantizer.rvq_first.vq.layers.0._codebook.embedding_sum"
    tensors[name.replace("embedding_sum", "embed_sum")] = tensors[name].clone()
    path = tmp_path / "dup.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(ValueError, match="tensors given twice"):
        load_mimi(path, tiny_cfg)


def test_only_safetensors(tiny_cfg, tmp_path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"a": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_mimi(path, tiny_cfg)
    with pytest.raises(ValueError, match="does not exist"):
        load_mimi(tmp_path / "absent.safetensors", tiny_cfg)


def test_name_mapping() -> None:
    assert official_to_internal("encoder_transformer.transformer.layers.3.self_attn.in_proj_weight") == \
        "encoder_transformer.layers.3.self_attn.in_proj.weight"
    assert official_to_internal("decoder.model.2.convtr.convtr.bias") == "decoder.model.2.bias"
    assert official_to_internal("quantizer.rvq_rest.vq.layers.7._codebook.embed_avg") == \
        "quantizer.acoustic.codebooks.7.embedding_sum"
    assert official_to_internal("nonsense") is None


def test_hugging_face_download_is_used(monkeypatch, tiny, tiny_path, tiny_cfg) -> None:
    calls = []

    def fake_download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename))
        return str(tiny_path)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    model = load_mimi(config=tiny_cfg, num_codebooks=4)
    assert calls == [("kyutai/moshiko-pytorch-bf16", MIMI_FILENAME)]
    assert MIMI_FILENAME == "tokenizer-e351c8d8-checkpoint125.safetensors"
    wav = _wav()
    assert model.num_codebooks == 4
    assert torch.equal(model.encode(wav), tiny.encode(wav, 4))


def test_offline_error_says_how_to_pass_a_file(monkeypatch, tiny_cfg) -> None:
    def offline(repo_id, filename, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", offline)
    with pytest.raises(OSError) as err:
        load_mimi(config=tiny_cfg)
    msg = str(err.value)
    assert "kyutai/moshiko-pytorch-bf16" in msg and "no network" in msg
    assert "load_mimi(weights='/path/to/tokenizer-e351c8d8-checkpoint125.safetensors')" in msg
    assert loaders.HF_REPO == "kyutai/moshiko-pytorch-bf16"


def test_dtype_and_device(tiny_path, tiny_cfg) -> None:
    model = load_mimi(tiny_path, tiny_cfg, device="cpu", dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert not model.training
    codes = model.encode(_wav())
    assert codes.dtype == torch.int64 and model.decode(codes).dtype == torch.float64


def test_read_without_mapping_places_tensors_and_equals_the_mapped_read(tmp_path) -> None:
    """`read_safetensors(path, place)` reads every dtype into memory of its own (the arrays
    `place` gives, else ordinary memory), with the values safetensors' memory-mapped read gives."""
    import numpy as np

    from mimi_codec.checkpoint import read_safetensors

    g = torch.Generator().manual_seed(0)
    tensors = {"w32": torch.randn(300, 7, generator=g), "w16": torch.randn(5, 3, generator=g).half(),
               "wbf": torch.randn(4, generator=g).bfloat16(), "i64": torch.arange(6).view(2, 3),
               "flag": torch.tensor([True, False]), "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 4)}
    path = tmp_path / "mixed.safetensors"
    save_file(tensors, str(path))
    pool = np.zeros(1 << 16, dtype=np.uint8)
    placed: list[str] = []

    def place(dtype, nbytes):  # the large float32 ones only, as load_mimi's arena
        if dtype != torch.float32 or nbytes < 1000:
            return None
        placed.append(str(nbytes))
        return pool[:nbytes]

    got = read_safetensors(path, place)
    mapped = read_safetensors(path)
    assert got.keys() == mapped.keys() == tensors.keys()
    for k, t in tensors.items():
        assert got[k].dtype == t.dtype and torch.equal(got[k], t) and torch.equal(mapped[k], t), k
    assert placed == [str(300 * 7 * 4)] and got["w32"].data_ptr() == pool.ctypes.data
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        path.write_bytes(path.read_bytes()[:200])
        read_safetensors(path, place)
