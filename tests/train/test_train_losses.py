"""Losses, balancer, discriminator and the flattened optimizer state."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from mimi_codec.train.discriminator import MultiScaleSTFTDiscriminator, discriminator_loss, generator_losses
from mimi_codec.train.losses import Balancer, MultiScaleMelLoss, mel_filterbank
from mimi_codec.train.state import flatten_optimizer, load_checkpoint, save_checkpoint, unflatten_optimizer


def test_mel_filterbank_covers_the_band() -> None:
    fb = mel_filterbank(512, 40, 24000)
    assert fb.shape == (40, 257)
    assert float(fb.min()) >= 0 and float(fb.max()) <= 1.0 + 1e-6
    # every band peaks once, and the peaks rise with the band index
    peaks = fb.argmax(dim=1)
    assert torch.all(peaks[1:] > peaks[:-1])


def test_mel_loss_zero_on_equal_and_grows_with_error() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 1, 4800) * 0.1
    loss = MultiScaleMelLoss((128, 256), 24000)
    assert float(loss(x, x)) == 0.0
    small, big = float(loss(x + 0.001 * torch.randn_like(x), x)), float(loss(x + 0.05 * torch.randn_like(x), x))
    assert 0 < small < big
    log_only = MultiScaleMelLoss((128, 256), 24000, linear_weight=0.0)
    y = x * 2
    # log-mel L1 of a 2x gain is ln(4) per bin (power scales by 4), on every scale
    assert float(log_only(y, x)) == pytest.approx(torch.log(torch.tensor(4.0)).item(), rel=1e-3)


def test_balancer_gives_each_loss_its_share_of_the_gradient() -> None:
    out = torch.randn(3, 1, 50, requires_grad=True)
    target = torch.zeros(3, 1, 50)
    losses = {"a": 1000 * F.mse_loss(out, target), "b": F.l1_loss(out, target)}
    bal = Balancer({"a": 3.0, "b": 1.0}, ema_decay=0.5)
    norms = bal.backward(losses, out)
    ga = torch.autograd.grad(1000 * F.mse_loss(out, target), out)[0]
    gb = torch.autograd.grad(F.l1_loss(out, target), out)[0]
    na, nb = ga.flatten(1).norm(dim=1).mean(), gb.flatten(1).norm(dim=1).mean()
    assert norms["a"] == pytest.approx(float(na), rel=1e-5)
    # after one step the EMA (bias-corrected) equals the norm: shares 3/4 and 1/4 of unit norm
    expected = ga / na * 0.75 + gb / nb * 0.25
    torch.testing.assert_close(out.grad, expected)


def test_discriminator_hinge_and_feature_matching() -> None:
    torch.manual_seed(0)
    disc = MultiScaleSTFTDiscriminator((256, 128), filters=4)
    real = torch.randn(2, 1, 4800) * 0.1
    fake = torch.randn(2, 1, 4800) * 0.1
    d = discriminator_loss(disc, fake, real)
    outs_f, outs_r = disc(fake), disc(real)
    expected = sum(F.relu(1 - lr).mean() + F.relu(1 + lf).mean() for (lf, _), (lr, _) in zip(outs_f, outs_r)) / 2
    torch.testing.assert_close(d, expected)
    adv, feat = generator_losses(disc, real.clone(), real)
    assert float(feat.detach()) == 0.0  # identical features
    expected_adv = sum(F.relu(1 - lr).mean() for lr, _ in outs_r) / 2
    torch.testing.assert_close(adv, expected_adv)
    _, feat2 = generator_losses(disc, fake, real)
    assert float(feat2.detach()) > 0.1


def test_optimizer_state_round_trips_through_safetensors(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.5, 0.9))
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 4)).pow(2).sum().backward()
        opt.step()
    tensors, meta = flatten_optimizer(opt, "optim.gen")
    assert sorted(tensors) == sorted(f"optim.gen.{i}.{k}" for i in (0, 1) for k in ("exp_avg", "exp_avg_sq", "step"))
    save_checkpoint(tmp_path / "c.safetensors", tensors, {"optim.gen": meta})
    t2, m2 = load_checkpoint(tmp_path / "c.safetensors")
    model2 = torch.nn.Linear(4, 3)
    model2.load_state_dict(model.state_dict())
    opt2 = torch.optim.AdamW(model2.parameters(), lr=5.0)
    unflatten_optimizer(opt2, "optim.gen", t2, m2["optim.gen"])
    assert opt2.param_groups[0]["lr"] == 1e-3 and opt2.param_groups[0]["betas"] == [0.5, 0.9]
    x = torch.randn(5, 4)
    for o, m in ((opt, model), (opt2, model2)):
        o.zero_grad()
        m(x).pow(2).sum().backward()
        o.step()
    assert torch.equal(model.weight, model2.weight)
    with pytest.raises(ValueError, match="format"):
        from safetensors.torch import save_file
        save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
        load_checkpoint(tmp_path / "other.safetensors")
