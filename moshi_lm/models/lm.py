"""The Moshi LM: token embeddings, temporal transformer, text head and depformer.

A token frame has 1 + n_q streams: text, Moshi's dep_q audio codebooks, the user's audio
codebooks. Streams are shifted by their acoustic `delays` before the temporal transformer
sees them. Each step the temporal transformer reads the previous frame and predicts the text
token; the depformer then predicts Moshi's audio codebooks one after the other, each
conditioned on the previous one (the text token first).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import LMConfig
from .layers import ZERO_TOKEN, ScaledEmbedding, StackedLinear, make_norm
from .transformer import KVCache, Transformer


@dataclass
class LMOutput:
    """Teacher-forced outputs, aligned with the input codes (no shift needed for a loss).

    logits: [B, dep_q, T, card]; NaN where the delays leave a position undefined.
    mask: [B, dep_q, T] bool, True where logits are defined.
    text_logits: [B, 1, T, text_card]; NaN where undefined.
    text_mask: [B, 1, T] bool.
    """

    logits: torch.Tensor
    mask: torch.Tensor
    text_logits: torch.Tensor
    text_mask: torch.Tensor


@dataclass
class LMState:
    """Streaming state of the LM for one batch: the KV rings of both transformers.

    temporal: one ring per temporal layer, capacity = context.
    depth: one ring per depformer layer, capacity = dep_q (rewritten every step).
    """

    temporal: list[KVCache]
    depth: list[KVCache]

    @property
    def batch_size(self) -> int:
        """Number of parallel streams."""
        return self.temporal[0].keys.shape[0] if self.temporal else self.depth[0].keys.shape[0]


def delay_codes(codes: torch.Tensor, delays: tuple[int, ...], fill: torch.Tensor) -> torch.Tensor:
    """Shift each stream right by its delay, filling the first positions with `fill`.

    Args:
        codes: [B, K, T] int64.
        delays: K delays.
        fill: [B, K, 1] int64 start tokens.
    Returns:
        [B, K, T].
    """
    T = codes.shape[-1]
    rows = []
    for k, d in enumerate(delays):
        if d == 0:
            rows.append(codes[:, k])
        else:
            rows.append(torch.cat([fill[:, k].expand(-1, min(d, T)), codes[:, k, :max(T - d, 0)]], dim=-1))
    return torch.stack(rows, dim=1)


def undelay_logits(logits: torch.Tensor, delays: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift each stream's logits back left by its delay; NaN and mask=False where undefined.

    Args:
        logits: [B, K, T, V].
        delays: K delays.
    Returns:
        (logits [B, K, T, V], mask [B, K, T] bool).
    """
    B, K, T, _ = logits.shape
    out = torch.full_like(logits, float("nan"))
    mask = torch.zeros(B, K, T, dtype=torch.bool, device=logits.device)
    for k, d in enumerate(delays):
        if d < T:
            out[:, k, :T - d] = logits[:, k, d:]
            mask[:, k, :T - d] = True
    return out, mask


class LMModel(nn.Module):
    """Moshi LM with the official parameter layout (see `moshi_lm.loading` for the names).

    Args:
        config: hyper-parameters.
        device, dtype: where and how to allocate the parameters (`meta` to build without memory).
    """

    def __init__(self, config: LMConfig, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        c = config
        self.config = c
        kw = {"device": device, "dtype": dtype}
        self.emb = nn.ModuleList([ScaledEmbedding(c.card + 1, c.dim, **kw) for _ in range(c.n_q)])
        self.text_emb = ScaledEmbedding(c.text_card + 1, c.dim, **kw)
        self.text_linear = StackedLinear(c.dim, c.text_out_card, **kw)
        self.transformer = Transformer(
            c.dim, c.num_heads, c.num_layers, int(c.hidden_scale * c.dim), 1, c.gating, c.norm,
            c.layer_scale, c.kv_repeat, c.context,
            c.max_period if c.positional_embedding == "rope" else None, **kw)
        self.out_norm = make_norm(c.norm, c.dim, **kw)
        num_in = c.dep_q if c.depformer_multi_linear else 1
        if c.depformer_multi_linear and c.depformer_weights_per_step_schedule is not None:
            num_in = max(c.depformer_weights_per_step_schedule) + 1
        self.depformer_in = nn.ModuleList([StackedLinear(c.dim, c.depformer_dim, **kw) for _ in range(num_in)])
        self.depformer_emb = nn.ModuleList(
            [ScaledEmbedding(c.card + 1, c.depformer_dim, **kw) for _ in range(c.dep_q - 1)])
        self.depformer_text_emb = ScaledEmbedding(c.text_card + 1, c.depformer_dim, **kw)
        self.depformer = Transformer(
            c.depformer_dim, c.depformer_num_heads, c.depformer_num_layers, c.depformer_ff,
            c.depformer_steps, c.depformer_gating, c.norm, c.depformer_layer_scale, c.kv_repeat, None,
            c.depformer_max_period if c.depformer_pos_emb == "rope" else None, **kw)
        self.extra_heads = nn.ModuleList(
            [StackedLinear(c.dim, c.extra_heads_dim, **kw) for _ in range(c.extra_heads_num_heads)])
        self.linears = nn.ModuleList([StackedLinear(c.depformer_dim, c.card, **kw) for _ in range(c.dep_q)])
        self.eval()

    # -- tokens ---------------------------------------------------------------------------
    def initial_tokens(self, batch_size: int) -> torch.Tensor:
        """Start tokens fed before the first frame: [B, 1 + n_q, 1] (text_card, then card)."""
        c = self.config
        tok = torch.full((batch_size, c.num_codebooks, 1), c.card, dtype=torch.long, device=self.device)
        tok[:, 0] = c.text_card
        return tok

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return self.text_emb.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the activations (the embeddings' dtype)."""
        return self.text_emb.weight.dtype

    def _depformer_in(self, k: int, hidden: torch.Tensor) -> torch.Tensor:
        c = self.config
        if not c.depformer_multi_linear:
            return self.depformer_in[0](hidden)
        index = k if c.depformer_weights_per_step_schedule is None else c.depformer_weights_per_step_schedule[k]
        return self.depformer_in[index](hidden)

    # -- temporal transformer -----------------------------------------------------------------
    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Sum of the audio embeddings (in stream order) plus the text embedding.

        Args:
            tokens: [B, 1 + n_q, T] int64 (already delayed), -1 for "no input".
        Returns:
            [B, T, dim].
        """
        x = self.emb[0](tokens[:, 1])
        for k in range(1, self.config.n_q):
            x = x + self.emb[k](tokens[:, k + 1])
        return x + self.text_emb(tokens[:, 0])

    def forward_text(self, tokens: torch.Tensor, position: int = 0,
                     caches: list[KVCache] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Temporal transformer and text head.

        Args:
            tokens: [B, 1 + n_q, T] int64, delayed input frames.
            position: step index of tokens[..., 0] (streaming).
            caches: temporal KV rings for streaming (T == 1), or None.
        Returns:
            (hidden [B, T, dim] after the output norm, text_logits [B, 1, T, text_card]).
        """
        hidden = self.out_norm(self.transformer(self.embed(tokens), position, caches))
        return hidden, self.text_linear(hidden)[:, None]

    def step_text(self, tokens: torch.Tensor, position: int,
                  caches: list[KVCache]) -> tuple[torch.Tensor, torch.Tensor]:
        """One streaming temporal step.

        Args:
            tokens: [B, 1 + n_q] int64, the delayed input frame at `position`.
            position: step index.
            caches: temporal KV rings.
        Returns:
            (hidden [B, dim] after the output norm, text_logits [B, text_card]).
        """
        hidden = self.out_norm(self.transformer.step(self.embed(tokens[:, :, None])[:, 0], position, caches))
        return hidden, self.text_linear(hidden)

    # -- depformer -------------------------------------------------------------------------------
    def step_depformer(self, k: int, prev_token: torch.Tensor, hidden: torch.Tensor,
                       caches: list[KVCache]) -> torch.Tensor:
        """One streaming depformer step: logits of Moshi's audio codebook k.

        Args:
            k: codebook index, 0 <= k < dep_q (steps must run in order 0, 1, ...).
            prev_token: [B] int64 valid ids (>= 0), the text token for k == 0, else audio codebook k - 1.
            hidden: [B, dim] temporal output of this frame.
            caches: depformer KV rings (capacity >= dep_q).
        Returns:
            [B, card] logits.
        """
        emb = self.depformer_text_emb if k == 0 else self.depformer_emb[k - 1]
        x = self._depformer_in(k, hidden) + emb.lookup(prev_token)
        out = self.depformer.step(x, k, caches, self.config.depformer_weight_index(k))
        return self.linears[k](out)

    def forward(self, codes: torch.Tensor) -> LMOutput:
        """Teacher-forced forward on a whole token sequence.

        Args:
            codes: [B, 1 + n_q, T] int64: text, Moshi audio, user audio, undelayed.
        Returns:
            `LMOutput` with logits aligned to `codes`.
        """
        c = self.config
        if codes.dim() != 3 or codes.shape[1] != c.num_codebooks:
            raise ValueError(f"codes has shape {tuple(codes.shape)}, expected [B, {c.num_codebooks}, T]")
        codes = codes.long()
        B, _, T = codes.shape
        initial = self.initial_tokens(B)
        delayed = torch.cat([initial, delay_codes(codes, c.delays, initial)], dim=2)
        hidden, text_logits = self.forward_text(delayed[:, :, :-1])
        target = delayed[:, :, 1:]
        inputs = []
        for k in range(c.dep_q):
            emb = self.depformer_text_emb if k == 0 else self.depformer_emb[k - 1]
            inputs.append(self._depformer_in(k, hidden) + emb(target[:, k]))
        x = torch.stack(inputs, dim=2).view(B * T, c.dep_q, -1)
        out = self.depformer(x, 0, None, [c.depformer_weight_index(k) for k in range(c.dep_q)])
        logits = torch.stack([self.linears[k](out[:, k]).view(B, T, -1) for k in range(c.dep_q)], dim=1)
        logits, mask = undelay_logits(logits, c.delays[1:1 + c.dep_q])
        mask &= codes[:, 1:1 + c.dep_q] != ZERO_TOKEN
        text_logits, text_mask = undelay_logits(text_logits, c.delays[:1])
        text_mask &= codes[:, :1] != ZERO_TOKEN
        return LMOutput(logits, mask, text_logits, text_mask)

    # -- streaming ---------------------------------------------------------------------------------
    def new_state(self, batch_size: int) -> LMState:
        """Allocate the KV rings for `batch_size` streams.

        Raises:
            ValueError: the config has no temporal context (the ring needs a size).
        """
        c = self.config
        if c.context is None:
            raise ValueError("streaming needs a finite context in the LM config, got context=None")
        dev, dt = self.device, self.dtype
        return LMState(self.transformer.new_caches(batch_size, c.context, dev, dt),
                       self.depformer.new_caches(batch_size, c.dep_q, dev, dt))


@torch.no_grad()
def random_init_(model: LMModel, seed: int = 0) -> LMModel:
    """Fill a float model with random weights (tests, benchmarks): N(0, 1/fan_in) matrices,
    norms' alpha near 1. Deterministic for a given seed and device; returns the model.

    Args:
        model: an allocated (not meta) float model.
        seed: random seed.
    """
    gen = torch.Generator(device=model.device).manual_seed(seed)
    for name, p in model.named_parameters():
        if not p.dtype.is_floating_point:
            raise ValueError(f"random_init_ needs a float model, {name} is {p.dtype}")
        p.normal_(generator=gen)
        if name.endswith("alpha") or name.endswith("scale"):
            p.mul_(0.1).add_(1.0)
        else:
            p.mul_(1.0 / max(p.shape[-1], 1) ** 0.5)
    return model
