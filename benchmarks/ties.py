"""Tell a rounding-level tie from a real disagreement when two implementations' codes differ.

Two fp32 implementations that sum in different orders can pick different centroids where
the two nearest ones are (almost) equally near: a tie. For each frame where the codes
differ, take the first differing codebook (later codebooks of the same quantizer follow
from its residual), rebuild its input from our latent and our earlier codes in float64,
and measure how much farther the other implementation's centroid is than ours.
"""

from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def latent(model, wav: torch.Tensor) -> torch.Tensor:
    """The latent the quantizer sees (what `encode` quantizes), chunk by chunk like `encode`.

    Args:
        model: a MimiModel.
        wav: [1, 1, T] with T a multiple of the frame size.
    Returns:
        [1, D, F]
    """
    state = model.init_state(1).encoder
    step = model.chunk_frames * model.frame_size
    out = []
    out = [model._latent_chunk(wav[..., i:i + step], state) for i in range(0, wav.shape[-1], step)]
    return torch.cat(out, -1)


@torch.no_grad()
def mismatch_gaps(model, wav: torch.Tensor, mine: np.ndarray, theirs: np.ndarray) -> list[float]:
    """Relative distance gap, (|r - c_theirs| - |r - c_ours|) / |r - c_ours|, at the first
    differing codebook of every frame whose codes differ (float64; about 1e-6 for a tie).

    Args:
        model: our MimiModel.
        wav: [1, 1, T] the encoded audio (T a multiple of the frame size).
        mine, theirs: [K, F] codes of the same audio.
    Returns:
        one gap per differing frame.
    """
    frames = np.flatnonzero((mine != theirs).any(axis=0))
    if not len(frames):
        return []
    emb = latent(model, wav)[0].double()  # [D, F]
    q = model.quantizer
    gaps = []
    for f in frames:
        k = int(np.flatnonzero(mine[:, f] != theirs[:, f])[0])
        rvq, first = (q.semantic, 0) if k < q.n_q_semantic else (q.acoustic, q.n_q_semantic)
        w = rvq.input_proj.weight.double()[..., 0]  # [d, D]
        r = w @ emb[:, f]
        for j in range(first, k):
            r = r - rvq.codebooks[j - first].embedding.double()[int(mine[j, f])]
        cb = rvq.codebooks[k - first].embedding.double()
        ours_d = (r - cb[int(mine[k, f])]).norm()
        theirs_d = (r - cb[int(theirs[k, f])]).norm()
        gaps.append(float((theirs_d - ours_d) / ours_d))
    return gaps
