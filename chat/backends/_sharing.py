"""Per-session copies of a model that share its weights."""

from __future__ import annotations

import copy
from typing import TypeVar

import torch

M = TypeVar("M", bound=torch.nn.Module)


def clone_sharing_weights(model: M) -> M:
    """A copy of `model` whose parameters and buffers are the original tensors.

    Each session gets its own module objects (so whatever streaming state a module keeps is
    its own) while the weights exist once in memory, however many sessions run.

    Args:
        model: the loaded model; never modified.
    """
    memo: dict[int, object] = {}
    for tensor in model.state_dict(keep_vars=True).values():
        memo[id(tensor)] = tensor
    for tensor in list(model.parameters()) + list(model.buffers()):
        memo[id(tensor)] = tensor
    return copy.deepcopy(model, memo)
