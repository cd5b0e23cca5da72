"""`LMGen`: the streaming generator. Feed one user frame per step, get Moshi's frame back.

Each step (step index t, the same for every batch row):
1. the user's codebooks are written into a small ring of token frames at column
   (t + delay) mod size, so a delayed stream is read `delay` steps later;
2. the frame at column t mod size is read, with start tokens wherever t <= delay;
3. the temporal transformer (position t) gives the text logits, the text token is sampled,
   then the depformer samples Moshi's audio codebooks one by one;
4. those tokens are written at column t + 1 and, once the delays have filled (t >= max
   delay), the frame [text, audio] re-aligned across delays is returned.
This reproduces kyutai's `LMGen` exactly, including returning nothing on the first step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ..models.lm import LMModel, LMState
from .sampling import sample_token

#: Token of a ring column that has not been written yet.
UNGENERATED = -2


@dataclass
class LMGenState:
    """Everything a conversation carries between steps.

    lm: KV rings of the LM.
    tokens: [B, 1 + n_q, max_delay + 2] int64 ring of token frames.
    step: frames consumed so far (the position of the next temporal step).
    generator: random source of the sampler.
    seed: seed restored by `reset`, None for a fresh random seed.
    """

    lm: LMState
    tokens: torch.Tensor
    step: int
    generator: torch.Generator
    seed: int | None = None

    @property
    def batch_size(self) -> int:
        """Number of parallel conversations."""
        return self.tokens.shape[0]

    def reset(self) -> None:
        """Start a new conversation (KV rings need no clearing: only filled slots are read)."""
        self.tokens.fill_(UNGENERATED)
        self.step = 0
        if self.seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(self.seed)


class LMGen:
    """Streaming generator over an `LMModel`.

    Args:
        lm: the model (eval mode).
        use_sampling: sample (True) or take the argmax (False).
        temp: audio temperature.
        temp_text: text temperature.
        top_k: audio top-k.
        top_k_text: text top-k.
        seed: seed of the sampler; None draws a random one.
    """

    def __init__(self, lm: LMModel, use_sampling: bool = True, temp: float = 0.8, temp_text: float = 0.7,
                 top_k: int = 250, top_k_text: int = 25, seed: int | None = None) -> None:
        self.lm = lm
        self.use_sampling = use_sampling
        self.temp = temp
        self.temp_text = temp_text
        self.top_k = top_k
        self.top_k_text = top_k_text
        self.seed = seed
        c = lm.config
        self.delays = c.delays
        self.max_delay = max(c.delays)
        self.ring = self.max_delay + 2
        self._state: LMGenState | None = None
        dev = lm.device
        K = c.num_codebooks
        self._user_rows = torch.arange(1 + c.dep_q, K, device=dev)
        self._out_rows = torch.arange(0, 1 + c.dep_q, device=dev)
        # Per column phase: where user tokens go, and which columns form the output frame.
        self._user_cols = [torch.tensor([(p + self.delays[k]) % self.ring for k in range(1 + c.dep_q, K)], device=dev)
                           for p in range(self.ring)]
        self._out_cols = [torch.tensor([(p - self.max_delay + self.delays[k]) % self.ring for k in range(1 + c.dep_q)],
                                       device=dev) for p in range(self.ring)]
        self._init_masks = [torch.tensor([t <= d for d in self.delays], device=dev)[None, :]
                            for t in range(self.max_delay + 1)]

    # -- state ----------------------------------------------------------------------------------------
    def new_state(self, batch_size: int) -> LMGenState:
        """Allocate the state of `batch_size` fresh conversations.

        Args:
            batch_size: number of parallel conversations (>= 1).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        c = self.lm.config
        tokens = torch.full((batch_size, c.num_codebooks, self.ring), UNGENERATED, dtype=torch.long,
                            device=self.lm.device)
        gen = torch.Generator(device=self.lm.device)
        state = LMGenState(self.lm.new_state(batch_size), tokens, 0, gen, self.seed)
        state.reset()
        return state

    @contextlib.contextmanager
    def streaming(self, batch_size: int = 1) -> Iterator[LMGenState]:
        """Context in which `step` keeps a conversation state for `batch_size` streams."""
        previous = self._state
        self._state = self.new_state(batch_size)
        try:
            yield self._state
        finally:
            self._state = previous

    def reset(self) -> None:
        """Restart the current streaming conversation(s) from scratch."""
        if self._state is None:
            raise RuntimeError("reset() needs an active `with lm_gen.streaming(batch_size):` block")
        self._state.reset()

    # -- one step ----------------------------------------------------------------------------------------
    def _frame_input(self, state: LMGenState, t: int) -> torch.Tensor:
        column = state.tokens[:, :, t % self.ring]
        if t <= self.max_delay:
            initial = self.lm.initial_tokens(1)[:, :, 0]
            column = torch.where(self._init_masks[t], initial, column)
        return column

    @torch.no_grad()
    def step(self, user_codes: torch.Tensor, state: LMGenState | None = None) -> torch.Tensor | None:
        """Consume one user frame, produce Moshi's next frame.

        Args:
            user_codes: [B, K, 1] int user codebooks, K >= n_q - dep_q (extra ones are ignored).
            state: explicit state from `new_state`; None uses the `streaming()` one.
        Returns:
            [B, 1 + dep_q, 1] int64 tokens (text, then Moshi's audio codebooks), or None while the
            acoustic delays fill (the first max-delay steps).
        """
        state = self._state if state is None else state
        if state is None:
            raise RuntimeError("step() needs a state: use `with lm_gen.streaming(batch_size):` or pass state=")
        c = self.lm.config
        need = c.num_user_codebooks
        if user_codes.dim() != 3 or user_codes.shape[1] < need or user_codes.shape[2] != 1:
            raise ValueError(f"user_codes has shape {tuple(user_codes.shape)}, expected [B, >={need}, 1]")
        if user_codes.shape[0] != state.batch_size:
            raise ValueError(f"user_codes batch {user_codes.shape[0]} differs from the state's {state.batch_size}")
        t = state.step
        tokens = state.tokens
        tokens[:, self._user_rows, self._user_cols[t % self.ring]] = user_codes[:, :need, 0].to(tokens)

        hidden, text_logits = self.lm.step_text(self._frame_input(state, t), t, state.lm.temporal)
        text = sample_token(text_logits, self.use_sampling, self.temp_text, self.top_k_text,
                            state.generator)
        audio = self.depformer_tokens(text, hidden, state)
        column = (t + 1) % self.ring
        tokens[:, 0, column] = text
        tokens[:, 1:1 + c.dep_q, column] = audio
        state.step = t + 1
        if state.step <= self.max_delay:
            return None
        return tokens[:, self._out_rows, self._out_cols[column]][:, :, None]

    def depformer_tokens(self, text: torch.Tensor, hidden: torch.Tensor, state: LMGenState) -> torch.Tensor:
        """Sample Moshi's audio codebooks of one frame, each conditioned on the previous token.

        Args:
            text: [B] int64 text token of this frame.
            hidden: [B, dim] temporal output of this frame.
            state: the conversation state (its depformer rings and generator are used).
        Returns:
            [B, dep_q] int64.
        """
        prev = text
        out = []
        for k in range(self.lm.config.dep_q):
            logits = self.lm.step_depformer(k, prev, hidden, state.lm.depth)
            prev = sample_token(logits, self.use_sampling, self.temp, self.top_k, state.generator)
            out.append(prev)
        return torch.stack(out, dim=1)
