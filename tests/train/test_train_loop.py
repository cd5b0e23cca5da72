"""Tiny training runs: the loss goes down, codebooks learn, dead codes are replaced,
checkpoints resume bit-exactly, the result loads in the official layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from trainutil import TINY_MODEL, tiny_train_config, write_tone_data

from mimi_codec import load_mimi
from mimi_codec.checkpoint import read_safetensors
from mimi_codec.train import TrainConfig, Trainer
from mimi_codec.train.loop import CHECKPOINT_NAME, CONFIG_NAME, METRICS_NAME, MODEL_NAME


@pytest.fixture(scope="module")
def tones(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tone_data(tmp_path_factory.mktemp("tones"))


def _eval_loss(tr: Trainer, wav: torch.Tensor) -> float:
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        out = tr.net(wav, 4, torch.zeros(wav.shape[0], dtype=torch.bool), gen, update=False)
        return float(tr.mel_loss(out.recon, wav))


def test_loss_goes_down_and_codebooks_learn(tones: Path, tmp_path: Path) -> None:
    cfg = TrainConfig.from_dict(tiny_train_config(steps=40))
    tr = Trainer(cfg, [tones], tmp_path)
    wav = tr.data.batch(10_000)  # a batch the run never trains on
    before = _eval_loss(tr, wav)
    q = tr.model.quantizer
    start = q.acoustic.codebooks[0].embedding_sum.clone()
    replaced = []
    tr.run(callback=lambda step, m: replaced.append(m["replaced"]))
    after = _eval_loss(tr, wav)
    assert after < 0.6 * before, (before, after)
    # used codebooks were initialised and moved; codebooks beyond num_codebooks do not exist here
    assert all(float(cb._initialized) == 1.0 for cb in q.semantic.codebooks)
    assert all(float(cb._initialized) == 1.0 for cb in q.acoustic.codebooks)
    assert not torch.equal(q.acoustic.codebooks[0].embedding_sum, start)
    # dead codes were replaced during the run (32 codes, few used at first)
    assert sum(replaced) > 0
    # the metrics log has one line per log_every steps, with decreasing mel loss overall
    import json
    lines = [json.loads(x) for x in (tmp_path / METRICS_NAME).read_text().splitlines()]
    assert [x["step"] for x in lines] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert lines[-1]["mel"] < lines[0]["mel"]
    assert lines[0]["steps_per_s"] > 0


def _all_state(tr: Trainer) -> dict[str, torch.Tensor]:
    t, _ = tr.state_tensors()
    return t


def test_resume_continues_bit_exactly(tones: Path, tmp_path: Path) -> None:
    over = {"steps": 8, "loss": {"adversarial": 1.0, "feature": 1.0, "disc_filters": 4,
                                 "disc_ffts": [256, 128], "mel_ffts": [64, 128, 256]},
            "data": {"segment_seconds": 0.32, "batch_size": 2, "noise_prob": 0.5, "eq_prob": 0.5,
                     "reverb_prob": 0.5}}
    cfg = TrainConfig.from_dict(tiny_train_config(**over))
    full = Trainer(cfg, [tones], tmp_path / "full")
    full.run()
    part = Trainer(cfg, [tones], tmp_path / "part")
    part.run(max_steps=5)
    part.save()
    resumed = Trainer(cfg, [tones], tmp_path / "part")
    resumed.load_state(tmp_path / "part" / CHECKPOINT_NAME)
    assert resumed.step == 5
    resumed.run()
    a, b = _all_state(full), _all_state(resumed)
    assert set(a) == set(b)
    assert any(k.startswith("optim.disc.") for k in a) and any(k.startswith("disc.") for k in a)
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert diff == []
    # and a run that was not interrupted differs from one with another seed (the test can fail)
    other = Trainer(TrainConfig.from_dict(tiny_train_config(**over, seed=4)), [tones], tmp_path / "other")
    other.run(max_steps=1)
    assert not torch.equal(other.model.decoder.model[0].weight, full.model.decoder.model[0].weight)


def test_export_loads_in_official_layout(tones: Path, tmp_path: Path) -> None:
    cfg = TrainConfig.from_dict(tiny_train_config(steps=6, export_ema=False))
    tr = Trainer(cfg, [tones], tmp_path)
    tr.run()
    names = set(read_safetensors(tmp_path / MODEL_NAME))
    assert "quantizer.rvq_first.vq.layers.0._codebook.embedding_sum" in names
    assert "encoder.model.0.conv.conv.weight" in names
    model = load_mimi(tmp_path / MODEL_NAME, tmp_path / CONFIG_NAME, num_codebooks=4)
    wav = tr.data.batch(500)[:1]
    codes = model.encode(wav)
    with torch.no_grad():
        out = tr.net(wav, 4, torch.zeros(1, dtype=torch.bool), torch.Generator(), update=False)
    assert torch.equal(codes, out.codes)
    torch.testing.assert_close(model.decode(codes), out.recon, atol=1e-5, rtol=1e-4)


def test_finetune_from_checkpoint(tones: Path, tmp_path: Path, fixtures_dir: Path) -> None:
    over = {"model": str(fixtures_dir / "mimi_tiny.json"),
            "init_weights": str(fixtures_dir / "mimi_tiny.safetensors"), "steps": 3,
            "quantizer": {"num_codebooks": 4}}
    cfg = TrainConfig.from_dict(tiny_train_config(**over))
    tr = Trainer(cfg, [tones], tmp_path)
    src = load_mimi(fixtures_dir / "mimi_tiny.safetensors", fixtures_dir / "mimi_tiny.json")
    # training starts from the given weights, and the official codebooks are not re-initialised
    assert torch.equal(tr.model.encoder.model[0].weight, src.encoder.model[0].weight)
    emb = src.quantizer.semantic.codebooks[0].embedding.clone()
    tr.run()
    ft = load_mimi(tmp_path / MODEL_NAME, tmp_path / CONFIG_NAME)
    assert not torch.equal(ft.encoder.model[0].weight, src.encoder.model[0].weight)
    # no k-means re-initialisation: the flag is as loaded (non-zero), not reset to 1
    init_flag = src.quantizer.semantic.codebooks[0]._initialized
    assert float(init_flag) != 0.0
    assert torch.equal(tr.model.quantizer.semantic.codebooks[0]._initialized, init_flag)
    moved = (ft.quantizer.semantic.codebooks[0].embedding - emb).norm(dim=1) / emb.norm(dim=1)
    # EMA updates moved the codes a little; a k-means re-initialisation would have moved them all
    assert float(moved.max()) > 0
    assert float(moved.median()) < 0.1


def test_bad_configs_are_named(tones: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown keys \['lr'\]"):
        TrainConfig.from_dict({"lr": 1})
    with pytest.raises(ValueError, match="optim: unknown keys"):
        TrainConfig.from_dict({"optim": {"learning_rate": 1}})
    with pytest.raises(ValueError, match="skip_quantization"):
        TrainConfig.from_dict({"quantizer": {"skip_quantization": 1.5}})
    cfg = TrainConfig.from_dict(tiny_train_config())
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="num_codebooks 9"):
        Trainer(TrainConfig.from_dict(tiny_train_config(quantizer={"num_codebooks": 9})), [tones], tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        Trainer(TrainConfig.from_dict(tiny_train_config()), [tmp_path / "nope"], tmp_path)
    assert TINY_MODEL["quantizer"]["bins"] == 32


def test_named_model_registry(tones: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mimi_codec import named_models

    cfg = TrainConfig.from_dict(tiny_train_config(steps=2))
    Trainer(cfg, [tones], tmp_path / "run").run()
    shipped = tmp_path / "models_data" / "tiny"
    shipped.mkdir(parents=True)
    (shipped / "model.safetensors").write_bytes((tmp_path / "run" / MODEL_NAME).read_bytes())
    (shipped / "config.json").write_text((tmp_path / "run" / CONFIG_NAME).read_text())
    (tmp_path / "models_data" / "incomplete").mkdir()  # no weights: not a model
    monkeypatch.setattr(named_models, "DATA_DIR", tmp_path / "models_data")
    assert sorted(named_models.named_models()) == ["tiny"]
    nm = named_models.named_model("tiny")
    assert nm.model_id == "mimi-codec:tiny"
    assert named_models.model_for_id("mimi-codec:tiny") == nm
    assert named_models.model_for_id("kyutai/other") is None
    model = load_mimi(nm.weights, nm.config, num_codebooks=4)
    assert model.config.quantizer.bins == 32
    with pytest.raises(ValueError, match=r"model 'big': no such model in this package; shipped models: \['tiny'\]"):
        named_models.named_model("big")


def test_config_file_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    import json

    (tmp_path / "cfgs").mkdir()
    (tmp_path / "cfgs" / "arch.json").write_text(json.dumps(TINY_MODEL))
    (tmp_path / "cfgs" / "train.json").write_text(json.dumps({"model": "arch.json", "init_weights": "w.safetensors"}))
    cfg = TrainConfig.load(tmp_path / "cfgs" / "train.json")
    assert cfg.model == str(tmp_path / "cfgs" / "arch.json")
    assert cfg.init_weights == str(tmp_path / "cfgs" / "w.safetensors")
    assert TrainConfig.from_dict({"model": "mimi"}).model == "mimi"


def test_export_for_shipping_half_precision(tones: Path, tmp_path: Path) -> None:
    from mimi_codec.train.export import export_for_shipping

    cfg = TrainConfig.from_dict(tiny_train_config(steps=4))
    Trainer(cfg, [tones], tmp_path / "run").run()
    src = load_mimi(tmp_path / "run" / MODEL_NAME, tmp_path / "run" / CONFIG_NAME, num_codebooks=4)
    path = export_for_shipping(tmp_path / "run" / MODEL_NAME, tmp_path / "run" / CONFIG_NAME, tmp_path / "ship")
    tensors = read_safetensors(path)
    assert {t.dtype for t in tensors.values()} == {torch.float16}
    assert path.stat().st_size < 0.55 * (tmp_path / "run" / MODEL_NAME).stat().st_size
    shipped = load_mimi(path, tmp_path / "ship" / CONFIG_NAME, num_codebooks=4)
    assert shipped.encoder.model[0].weight.dtype == torch.float32
    for a, b in zip(src.quantizer.acoustic.codebooks, shipped.quantizer.acoustic.codebooks):
        # centroids survive as exactly as half precision allows (usage normalised to 1)
        torch.testing.assert_close(b.embedding, a.embedding.half().float(), atol=0, rtol=0)
        assert torch.equal(b.cluster_usage, torch.ones_like(b.cluster_usage))
    codes = src.encode(tones_wav(tones))
    ref, half = src.decode(codes), shipped.decode(codes)
    assert float((ref - half).abs().max()) < 1e-2 * float(ref.abs().max())


def tones_wav(folder: Path) -> torch.Tensor:
    from mimi_codec.audio import load_audio

    return torch.from_numpy(load_audio(folder / "tone0.wav").wav).view(1, 1, -1)


class _EnvelopeTeacher:
    """A stand-in for a speech model: per-band log energies of 10 ms frames ([B, 8, T / 240])."""

    dim = 8

    def __init__(self) -> None:
        self.bands = torch.nn.Conv1d(1, 8, 240, stride=240, bias=False)
        torch.nn.init.normal_(self.bands.weight, generator=torch.Generator().manual_seed(0))

    def __call__(self, wav: torch.Tensor) -> torch.Tensor:
        return torch.log1p(self.bands(wav).pow(2))


def test_semantic_distillation_trains_the_first_codebook_towards_the_teacher(tones: Path, tmp_path: Path) -> None:
    over = tiny_train_config(steps=30)
    over["loss"] = {**over["loss"], "semantic": 1.0}
    cfg = TrainConfig.from_dict(over)
    with pytest.raises(ValueError, match="teacher"):
        Trainer(cfg, [tones], tmp_path / "no-teacher")
    tr = Trainer(cfg, [tones], tmp_path, teacher=_EnvelopeTeacher())
    proj = tr.semantic_proj.weight.detach().clone()
    seen = []
    tr.run(callback=lambda step, m: seen.append(m["semantic"]))
    assert len(seen) == 30 and all(0.0 <= s <= 2.0 for s in seen)  # 1 - cosine similarity
    assert sum(seen[-5:]) / 5 < 0.7 * sum(seen[:5]) / 5, seen  # the semantic output learns the teacher
    assert not torch.equal(tr.semantic_proj.weight, proj)
    tensors, _ = tr.state_tensors()
    assert any(k.startswith("semantic_proj.") for k in tensors)  # resumable with the projection
    assert not any(k.startswith("semantic_proj.") for k in read_safetensors(tmp_path / MODEL_NAME))  # not shipped
