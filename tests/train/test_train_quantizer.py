"""The quantizer's training path: k-means init, EMA updates, dead codes, straight-through."""

from __future__ import annotations

import torch

from mimi_codec.config import QuantizerConfig
from mimi_codec.quantization.codebook import Codebook
from mimi_codec.quantization.rvq import SplitResidualVQ
from mimi_codec.train.config import QuantizerTrainConfig
from mimi_codec.train.quantizer import _ema_update, _replace_dead, kmeans, train_split_rvq


def test_kmeans_recovers_separated_clusters() -> None:
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0]])
    x = torch.cat([c + 0.1 * torch.randn(50, 2, generator=g) for c in centers])
    found, counts = kmeans(x, 3, 20, torch.Generator().manual_seed(1))
    # every true centre has a found centroid within 0.1, and every cluster got its 50 points
    d = torch.cdist(centers, found)
    assert float(d.min(dim=1).values.max()) < 0.1
    assert sorted(counts.tolist()) == [50.0, 50.0, 50.0]


def test_ema_update_matches_formula() -> None:
    cb = Codebook(2, 3)
    cb.embedding_sum.copy_(torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.0, 3.0]]))
    cb.cluster_usage.copy_(torch.tensor([1.0, 2.0, 3.0]))
    x = torch.tensor([[1.0, 0.0], [3.0, 1.0], [0.0, 2.0]])
    idx = torch.tensor([0, 0, 2])
    _ema_update(cb, x, idx, 0.99)
    torch.testing.assert_close(cb.cluster_usage, torch.tensor([0.99 + 0.02, 1.98, 2.97 + 0.01]))
    torch.testing.assert_close(cb.embedding_sum,
                               torch.tensor([[0.99 + 0.04, 0.99 + 0.01], [1.98, 0.0], [0.0, 2.97 + 0.02]]))
    # the inference centroid reads the updated buffers
    torch.testing.assert_close(cb.embedding[1], torch.tensor([1.0, 0.0]))


def test_dead_codes_take_batch_vectors() -> None:
    cb = Codebook(2, 4)
    cb.embedding_sum.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [9.0, 9.0], [5.0, 5.0]]))
    cb.cluster_usage.copy_(torch.tensor([1.0, 1.0, 1e-4, 1.0]))
    x = torch.tensor([[7.0, -7.0]] * 6)
    n = _replace_dead(cb, x, threshold=0.1, gen=torch.Generator().manual_seed(0))
    assert n == 1
    torch.testing.assert_close(cb.embedding[2], torch.tensor([7.0, -7.0]))
    torch.testing.assert_close(cb.embedding[[0, 1, 3]], torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]))
    # the new code gets the mean usage per code
    assert abs(float(cb.cluster_usage[2]) - (3.0 + 1e-4) / 4) < 1e-6


def _split(bins: int = 16) -> SplitResidualVQ:
    torch.manual_seed(0)
    return SplitResidualVQ(QuantizerConfig(dimension=4, n_q=4, bins=bins, input_dimension=6, output_dimension=6))


def test_first_pass_initialises_only_used_codebooks() -> None:
    q = _split()
    x = torch.randn(2, 6, 40, generator=torch.Generator().manual_seed(2))
    out = train_split_rvq(q, x, 3, torch.zeros(2, dtype=torch.bool), QuantizerTrainConfig(),
                          torch.Generator().manual_seed(0), check_dead=False)
    inited = [float(cb._initialized) for cb in list(q.semantic.codebooks) + list(q.acoustic.codebooks)]
    assert inited == [1.0, 1.0, 1.0, 0.0]
    assert out.codes.shape == (2, 3, 40)
    # the codes are the nearest centroids of the residuals, as inference computes them
    assert torch.equal(out.codes, q.encode(x, 3))


def test_straight_through_and_commitment() -> None:
    q = _split()
    cfg = QuantizerTrainConfig()
    x = torch.randn(2, 6, 10, generator=torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(0)
    train_split_rvq(q, x, 4, torch.zeros(2, dtype=torch.bool), cfg, gen, check_dead=False)  # init
    xr = x.clone().requires_grad_(True)
    out = train_split_rvq(q, xr, 4, torch.zeros(2, dtype=torch.bool), cfg, gen, check_dead=False, update=False)
    # forward value: the decoded codes
    torch.testing.assert_close(out.quantized, q.decode(out.codes), atol=1e-5, rtol=1e-5)
    # backward: identity through the codebooks, so d(sum out)/dx is what the projections alone give
    (g,) = torch.autograd.grad(out.quantized.sum(), xr)
    xs = x.clone().requires_grad_(True)
    ref = q.semantic.output_proj(q.semantic.input_proj(xs)) + q.acoustic.output_proj(q.acoustic.input_proj(xs))
    (g_ref,) = torch.autograd.grad(ref.sum(), xs)
    torch.testing.assert_close(g, g_ref)
    # commitment = mean over codebooks of mse(residual, its code)
    z = q.semantic.input_proj(x).transpose(1, 2).reshape(-1, 4)
    c0 = q.semantic.codebooks[0].decode(out.codes[:, 0].reshape(-1))
    sem = torch.mean((z - c0) ** 2)
    za = q.acoustic.input_proj(x).transpose(1, 2).reshape(-1, 4)
    acoustic = []
    for i, cb in enumerate(q.acoustic.codebooks[:3]):
        c = cb.decode(out.codes[:, 1 + i].reshape(-1))
        acoustic.append(torch.mean((za - c) ** 2))
        za = za - c
    expected = (sem + sum(acoustic)) / 4
    torch.testing.assert_close(out.commitment, expected, atol=1e-6, rtol=1e-5)


def test_skipped_items_get_the_unquantized_latent() -> None:
    q = _split()
    x = torch.randn(3, 6, 10, generator=torch.Generator().manual_seed(4))
    skip = torch.tensor([True, False, True])
    out = train_split_rvq(q, x, 2, skip, QuantizerTrainConfig(), torch.Generator().manual_seed(0), False)
    plain = q.semantic.output_proj(q.semantic.input_proj(x)) + q.acoustic.output_proj(q.acoustic.input_proj(x))
    torch.testing.assert_close(out.quantized[0], plain[0])
    torch.testing.assert_close(out.quantized[2], plain[2])
    torch.testing.assert_close(out.quantized[1], q.decode(out.codes)[1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out.quantized[1], plain[1], atol=1e-3)
