"""Token sampling as small pure functions: temperature, top-k, and a seeded categorical draw.

The categorical draw uses the exponential race (argmax of p / E with E ~ Exp(1)), which
samples exactly from p without a host synchronisation, as the reference does.
"""

from __future__ import annotations

import torch


def logits_to_probs(logits: torch.Tensor, temp: float, top_k: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Softmax at temperature `temp`, restricted to the `top_k` most likely tokens.

    Args:
        logits: [..., V] float.
        temp: temperature > 0.
        top_k: keep this many candidates; 0 or >= V keeps all.
    Returns:
        (probs [..., k], token ids [..., k] or None when all V are kept).
    """
    probs = torch.softmax(logits / temp, dim=-1)
    if 0 < top_k < logits.shape[-1]:
        probs, ids = torch.topk(probs, top_k, dim=-1)
        return probs, ids
    return probs, None


def draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One categorical draw per row: argmax of probs / Exp(1) noise.

    Args:
        probs: [..., V] non-negative weights.
        generator: random source (None = torch's global one).
    Returns:
        [..., 1] int64 indices into the last dimension.
    """
    noise = torch.empty_like(probs).exponential_(1, generator=generator)
    return (probs / noise).argmax(dim=-1, keepdim=True)


def sample_token(logits: torch.Tensor, use_sampling: bool, temp: float, top_k: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Next token from logits: greedy (argmax) or temperature/top-k sampling.

    Args:
        logits: [..., V] (cast to float32).
        use_sampling: False or temp <= 0 gives the argmax.
        temp: temperature.
        top_k: top-k cut, 0 = none.
        generator: random source for sampling.
    Returns:
        [...] int64 tokens.
    """
    logits = logits.float()
    if not use_sampling or temp <= 0.0:
        return logits.argmax(dim=-1)
    probs, ids = logits_to_probs(logits, temp, top_k)
    choice = draw(probs, generator)
    if ids is not None:
        choice = ids.gather(-1, choice)
    return choice[..., 0]
