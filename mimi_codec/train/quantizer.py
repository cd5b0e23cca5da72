"""The training path of Mimi's split RVQ, written into the inference quantizer's own buffers.

The inference `Codebook` keeps `embedding_sum`, `cluster_usage` and `_initialized`
(centroid = embedding_sum / usage). Training updates exactly those buffers:

- k-means on the first batch sets the centroids (`_initialized` becomes 1);
- every step, the EMA (decay 0.99) of the per-code counts goes into `cluster_usage` and
  the EMA of the per-code sums of assigned vectors into `embedding_sum`;
- every few steps, codes whose usage fell under a share of the mean are replaced by
  vectors of the current batch (dead-code replacement);
- the latent passes the quantizer with the straight-through estimator, and a commitment
  loss pulls it towards its (frozen) quantized value.

So a trained model saves with `save_mimi` in the official layout, with nothing to convert.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ..quantization.codebook import Codebook
from ..quantization.rvq import ResidualVQ, SplitResidualVQ
from .config import QuantizerTrainConfig


@dataclass
class QuantizerStats:
    """What one training pass of the quantizer did.

    Attributes:
        commitment: scalar loss, mean over the used codebooks of || x - sg(q) ||^2.
        codes: [B, K, T] int64 codes of the used codebooks.
        replaced: dead codes replaced in this pass (all codebooks together).
        perplexity: [K] exp(entropy) of each codebook's code histogram in this batch.
    """

    commitment: torch.Tensor
    codes: torch.Tensor
    replaced: int
    perplexity: torch.Tensor


def _kmeans_pp(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: each new start point drawn with probability ~ squared distance."""
    n = x.shape[0]
    idx = [int(torch.randint(0, n, (1,), generator=gen))]
    d2 = ((x - x[idx[0]]) ** 2).sum(-1)
    for _ in range(1, k):
        total = float(d2.sum())
        if total <= 0:  # fewer distinct points than clusters: repeat some
            idx.append(int(torch.randint(0, n, (1,), generator=gen)))
        else:
            idx.append(int(torch.multinomial(d2 / total, 1, generator=gen)))
        d2 = torch.minimum(d2, ((x - x[idx[-1]]) ** 2).sum(-1))
    return x[idx].clone()


def kmeans(x: torch.Tensor, k: int, iters: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means (Euclidean, k-means++ start). With fewer vectors than clusters, starts from a
    draw with replacement, as the codec recipes do; unused clusters keep their start point.

    Args:
        x: [N, D] vectors.
        k: clusters.
        iters: Lloyd iterations.
        gen: random generator for the start points.
    Returns:
        centroids [k, D] and counts [k] (vectors assigned to each cluster in the last pass).
    """
    n = x.shape[0]
    if n > k:
        centroids = _kmeans_pp(x, k, gen)
    else:
        centroids = x[torch.randint(0, n, (k,), generator=gen)].clone()
    counts = torch.zeros(k, dtype=x.dtype)
    for _ in range(max(iters, 1)):
        assign = torch.cdist(x, centroids).argmin(dim=-1)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        used = counts > 0
        centroids[used] = sums[used] / counts[used, None]
    return centroids, counts


@torch.no_grad()
def _init_codebook(cb: Codebook, x: torch.Tensor, cfg: QuantizerTrainConfig, gen: torch.Generator) -> None:
    centroids, counts = kmeans(x.float().cpu(), cb.bins, cfg.kmeans_iters, gen)
    # Usage starts at the k-means counts: clusters left empty are dead at once and get
    # vectors of this batch (with fewer vectors than codes, most clusters are empty).
    cb.cluster_usage.copy_(counts.to(cb.cluster_usage))
    cb.embedding_sum.copy_((centroids * counts[:, None]).to(cb.embedding_sum))
    _replace_dead(cb, x, cfg.dead_threshold, gen)
    cb._initialized.fill_(1.0)


@torch.no_grad()
def _ema_update(cb: Codebook, x: torch.Tensor, idx: torch.Tensor, decay: float) -> None:
    counts = torch.bincount(idx, minlength=cb.bins).to(cb.cluster_usage.dtype)
    sums = torch.zeros_like(cb.embedding_sum).index_add_(0, idx, x.to(cb.embedding_sum.dtype))
    cb.cluster_usage.mul_(decay).add_(counts, alpha=1 - decay)
    cb.embedding_sum.mul_(decay).add_(sums, alpha=1 - decay)


@torch.no_grad()
def _replace_dead(cb: Codebook, x: torch.Tensor, threshold: float, gen: torch.Generator) -> int:
    """Codes whose usage is under `threshold` x the mean usage per code take random vectors
    of `x`, with the mean usage (so they must be used to stay alive)."""
    mean_usage = max(float(cb.cluster_usage.sum()) / cb.bins, x.shape[0] / cb.bins * 1e-3)
    dead = cb.cluster_usage < threshold * mean_usage
    n = int(dead.sum())
    if n == 0:
        return 0
    pick = torch.randint(0, x.shape[0], (n,), generator=gen).to(x.device)
    cb.cluster_usage[dead] = mean_usage
    cb.embedding_sum[dead] = x[pick].to(cb.embedding_sum.dtype) * mean_usage
    return n


def _perplexity(idx: torch.Tensor, bins: int) -> torch.Tensor:
    p = torch.bincount(idx, minlength=bins).float()
    p = p / p.sum().clamp(min=1)
    return torch.exp(-(p * torch.log(p.clamp(min=1e-10))).sum())


def train_rvq(rvq: ResidualVQ, x: torch.Tensor, n_q: int, cfg: QuantizerTrainConfig,
              gen: torch.Generator, check_dead: bool, update: bool = True
              ) -> tuple[torch.Tensor, torch.Tensor, QuantizerStats]:
    """One training pass of a residual VQ.

    Args:
        rvq: the inference module (projections + codebooks), updated in place.
        x: [B, D_in, T] latent.
        n_q: codebooks to use (0 returns the unquantized projection only).
        cfg: quantizer training settings.
        gen: random generator (k-means start, dead-code picks).
        check_dead: replace dead codes in this pass.
        update: update the codebooks (False: quantize only, e.g. for validation).
    Returns:
        quantized [B, D_out, T] (straight-through), unquantized [B, D_out, T] (the projections
        alone), and the stats.
    """
    B, _, T = x.shape
    z = rvq.input_proj(x)  # [B, D, T]
    flat = z.transpose(1, 2).reshape(B * T, -1)
    residual = flat
    quantized = torch.zeros_like(flat)
    commit = flat.new_zeros(())
    codes, perps = [], []
    replaced = 0
    for cb in rvq.codebooks[:n_q]:
        r = residual.detach()
        if update and float(cb._initialized) == 0.0:
            _init_codebook(cb, r, cfg, gen)
        idx = cb.encode(r)
        q = cb.decode(idx).detach()
        commit = commit + F.mse_loss(residual, q)
        if update:
            _ema_update(cb, r, idx, cfg.decay)
            if check_dead:
                replaced += _replace_dead(cb, r, cfg.dead_threshold, gen)
        quantized = quantized + q
        residual = residual - q
        codes.append(idx.view(B, T))
        perps.append(_perplexity(idx, cb.bins))
    # Straight-through: forward the quantized value, backward as if it were the identity.
    st = flat + (quantized - flat).detach()
    out_q = rvq.output_proj(st.view(B, T, -1).transpose(1, 2))
    out_x = rvq.output_proj(z)
    stats = QuantizerStats(
        commitment=commit / max(n_q, 1),
        codes=torch.stack(codes, dim=1) if codes else torch.zeros(B, 0, T, dtype=torch.long, device=x.device),
        replaced=replaced,
        perplexity=torch.stack(perps) if perps else torch.zeros(0),
    )
    return out_q, out_x, stats


@dataclass
class SplitQuantizerOutput:
    """Output of the split RVQ training pass.

    Attributes:
        quantized: [B, D, T] what the decoder gets (quantized, or not for skipped items).
        semantic: [B, D, T] the semantic (first) codebook's output alone, for distillation.
        commitment: scalar commitment loss (semantic + acoustic).
        codes: [B, K, T] int64 codes.
        replaced: dead codes replaced.
        perplexity: [K] per-codebook perplexity in this batch.
    """

    quantized: torch.Tensor
    semantic: torch.Tensor
    commitment: torch.Tensor
    codes: torch.Tensor
    replaced: int
    perplexity: torch.Tensor


def train_split_rvq(q: SplitResidualVQ, x: torch.Tensor, n_q: int, skip: torch.Tensor,
                    cfg: QuantizerTrainConfig, gen: torch.Generator, check_dead: bool,
                    update: bool = True) -> SplitQuantizerOutput:
    """Training pass of Mimi's split RVQ (semantic codebooks + acoustic ones, outputs summed).

    Args:
        q: the inference quantizer, its codebook buffers updated in place.
        x: [B, D, T] latent at the frame rate.
        n_q: total codebooks to use, >= n_q_semantic.
        skip: [B] bool, items decoded from the unquantized latent.
        cfg: quantizer training settings.
        gen: random generator.
        check_dead: replace dead codes in this pass.
        update: update the codebooks.
    """
    n_sem = q.n_q_semantic
    sq, sx, s_stats = train_rvq(q.semantic, x, n_sem, cfg, gen, check_dead, update)
    aq, ax, a_stats = train_rvq(q.acoustic, x, n_q - n_sem, cfg, gen, check_dead, update)
    quant = sq + aq
    unquant = sx + ax
    mask = skip.view(-1, 1, 1).to(x.device)
    out = torch.where(mask, unquant, quant)
    n_a = n_q - n_sem
    commit = (s_stats.commitment * n_sem + a_stats.commitment * n_a) / n_q
    return SplitQuantizerOutput(
        quantized=out,
        semantic=sq,
        commitment=commit,
        codes=torch.cat([s_stats.codes, a_stats.codes], dim=1),
        replaced=s_stats.replaced + a_stats.replaced,
        perplexity=torch.cat([s_stats.perplexity, a_stats.perplexity]),
    )
