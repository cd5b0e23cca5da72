"""The `fused_rvq` speedup: a streamed frame's residual quantization in one numba kernel gives
exactly the plain path's codes, near ties included (the kernel hands those to PyTorch's op),
and stays out of the way where it does not apply."""

from __future__ import annotations

import copy

import pytest
import torch

from mimi_codec.config import QuantizerConfig
from mimi_codec.modules import gemm
from mimi_codec.quantization import rvq
from mimi_codec.quantization.codebook import Codebook

pytestmark = pytest.mark.skipif(rvq.fused_kernels() is None, reason="numba is not installed")


def _pair(n_q: int = 8, bins: int = 512, dim: int = 32) -> tuple[rvq.ResidualVQ, rvq.ResidualVQ]:
    """(fused, plain) copies of one random residual quantizer, distance caches on."""
    torch.manual_seed(0)
    cfg = QuantizerConfig(dimension=dim, input_dimension=48, output_dimension=48, bins=bins, n_q=n_q + 1,
                          n_q_semantic=1)
    fused = rvq.ResidualVQ(n_q, cfg).eval()
    with torch.no_grad():
        scale = 1.0
        for cb in fused.codebooks:
            usage = 0.5 + torch.rand(bins)
            cb.embedding_sum.copy_(scale * torch.randn(bins, dim) * usage[:, None])
            cb.cluster_usage.copy_(usage)
            cb.cache_distances = True
            scale *= 0.7
    plain = copy.deepcopy(fused)
    fused.fused, plain.fused = True, False
    return fused, plain


class _Count:
    def __init__(self, monkeypatch) -> None:
        self.kernel = 0
        self.plain_op = 0
        run, encode = gemm.run_numba, Codebook.encode

        def counting_run(*args: object) -> object:
            self.kernel += 1
            return run(*args)

        def counting_encode(cb: Codebook, x: torch.Tensor) -> torch.Tensor:
            self.plain_op += 1
            return encode(cb, x)

        monkeypatch.setattr(rvq.gemm, "run_numba", counting_run)
        monkeypatch.setattr(Codebook, "encode", counting_encode)


@torch.no_grad()
@pytest.mark.parametrize("batch,frames", [(1, 1), (1, 2), (2, 2), (1, 4)])
def test_fused_codes_equal_the_plain_path(monkeypatch, threads, batch, frames) -> None:
    fused, plain = _pair()
    for i in range(40):
        x = torch.randn(batch, 48, frames) * (1 + i % 4)
        expected = plain.encode(x, 8)
        count = _Count(monkeypatch)
        assert torch.equal(fused.encode(x, 8), expected)
        assert count.kernel >= 1  # the kernel ran
        monkeypatch.undo()
    assert torch.equal(fused.encode(x, 3), plain.encode(x, 3))  # fewer codebooks


def _second_stage_input(fused: rvq.ResidualVQ, x: torch.Tensor) -> torch.Tensor:
    """[dim] what codebook 1 sees for the first vector of x (its residual after codebook 0)."""
    residual = fused.input_proj(x)[0].T.contiguous()  # [T, dim]
    first = fused.codebooks[0].embedding[fused.codebooks[0].encode(residual)]
    return residual[0] - first[0]


def _place(models: tuple[rvq.ResidualVQ, ...], **centroids: torch.Tensor) -> None:
    """Set codebook 1's centroids, e.g. c5=..., in every model."""
    for c in models:
        for name, value in centroids.items():
            i = int(name[1:])
            c.codebooks[1].embedding_sum[i] = value.float() * c.codebooks[1].cluster_usage[i]


@torch.no_grad()
def test_near_ties_go_to_the_plain_op(monkeypatch) -> None:
    """A residual exactly between two centroids: the kernel stops before that codebook, the
    plain op decides it, the kernel goes on with the rest."""
    fused, plain = _pair(n_q=4, bins=64, dim=8)
    x = torch.randn(1, 48, 1)
    r1 = _second_stage_input(fused, x)
    offset = torch.zeros(8)
    offset[0] = 0.01
    _place((fused, plain), c5=r1 + offset, c9=r1 - offset)  # mirrored around r1: the nearest pair
    count = _Count(monkeypatch)
    codes = fused.encode(x, 4)
    assert count.plain_op == 1 and count.kernel == 2  # stages 0 | 1 by the plain op | 2-3
    monkeypatch.undo()
    assert torch.equal(codes, plain.encode(x, 4))
    assert codes[0, 1, 0].item() in (5, 9)


@torch.no_grad()
def test_near_ties_reach_the_plain_op_in_the_plain_paths_layout(monkeypatch) -> None:
    """PyTorch's GEMM sums in an order that depends on its operand's strides, and a true tie
    can turn on that order, so the plain op must see the very tensor the plain path gives it
    (a strided view when B = 1 and T > 1), not the kernel's contiguous copy. Found on a
    full-size random model: 5 of 1,500 random latents coded differently before."""
    fused, plain = _pair(n_q=4, bins=64, dim=8)
    x = torch.randn(1, 48, 2)
    r1 = _second_stage_input(fused, x)
    offset = torch.zeros(8)
    offset[0] = 0.01
    _place((fused, plain), c5=r1 + offset, c9=r1 - offset)  # an exact tie on the first row
    seen: dict[str, list[torch.Tensor]] = {"fused": [], "plain": []}
    encode = Codebook.encode
    for name, model in (("plain", plain), ("fused", fused)):
        def spy(cb: Codebook, v: torch.Tensor, out: list[torch.Tensor] = seen[name]) -> torch.Tensor:
            out.append(v)
            return encode(cb, v)
        monkeypatch.setattr(Codebook, "encode", spy)
        model.encode(x, 4)
        monkeypatch.undo()
    assert len(seen["fused"]) == 1  # only the tied stage left the kernel
    mine, theirs = seen["fused"][0], seen["plain"][1]
    assert mine.stride() == theirs.stride() and theirs.stride() != theirs.contiguous().stride()
    assert torch.equal(mine, theirs)
    assert torch.equal(fused.encode(x, 4), plain.encode(x, 4))


@torch.no_grad()
def test_close_calls_the_bound_can_settle_stay_in_the_kernel(monkeypatch) -> None:
    """Two centroids whose distances to the residual differ by 2.5 gamma_n (L_5 + L_9): within
    the fp32 screen's reach (4 gamma_n (L_5 + L_9)), so the kernel must look closer, but wide
    enough that the exact sums prove what any summation order gives. No plain op runs."""
    fused, plain = _pair(n_q=4, bins=64, dim=8)
    x = torch.randn(1, 48, 1)
    r1 = _second_stage_input(fused, x).double()
    n = 8 + 2
    gamma = n * 2.0 ** -24 / (1 - n * 2.0 ** -24)
    x2 = float(r1.pow(2).sum())

    def screen(c: torch.Tensor) -> float:  # the kernel's L_k: 2|x||c| + 2|x|^2 + |c|^2
        return 2 * x2 ** 0.5 * float(c.norm()) + 2 * x2 + float(c.pow(2).sum())

    offset = torch.zeros(8, dtype=torch.float64)
    offset[0] = 0.01
    gap = 2.5 * gamma * (screen(r1 + offset) + screen(r1 - offset))
    stretch = (1 + gap / float(offset.pow(2).sum())) ** 0.5  # |r1 - c9|^2 = |r1 - c5|^2 + gap
    _place((fused, plain), c5=r1 + offset, c9=r1 - stretch * offset)
    count = _Count(monkeypatch)
    codes = fused.encode(x, 4)
    assert count.plain_op == 0 and count.kernel == 1  # settled inside: one call, no plain op
    monkeypatch.undo()
    assert torch.equal(codes, plain.encode(x, 4))
    assert codes[0, 1, 0].item() == 5


@torch.no_grad()
def test_follows_codebook_changes() -> None:
    fused, plain = _pair()
    x = torch.randn(1, 48, 2)
    assert torch.equal(fused.encode(x, 8), plain.encode(x, 8))
    for c in (fused, plain):
        c.codebooks[2].embedding_sum.mul_(-1)  # in place
        c.codebooks[4].cluster_usage.fill_(2.0)
    assert torch.equal(fused.encode(x, 8), plain.encode(x, 8))


def test_not_used_with_autograd_many_vectors_or_without_numba(monkeypatch) -> None:
    fused, plain = _pair()
    count = _Count(monkeypatch)
    fused.encode(torch.randn(1, 48, 2), 8)  # autograd on
    with torch.no_grad():
        x = torch.randn(1, 48, rvq.FUSED_MAX_ROWS + 1)
        assert torch.equal(fused.encode(x, 8), plain.encode(x, 8))
        assert count.kernel == 0
        monkeypatch.setattr(rvq, "fused_kernels", lambda: None)
        fused.encode(torch.randn(1, 48, 1), 8)
    assert count.kernel == 0
