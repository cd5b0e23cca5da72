"""Full-duplex dialogue frame by frame: user audio in, Moshi's audio and text out.

`DuplexPipeline` ties the Mimi codec (`mimi_codec`) to `LMGen`: each 80 ms user frame
(1920 samples at 24 kHz) is encoded to codes, the LM produces Moshi's next frame of tokens,
the audio tokens are decoded to 1920 samples and the text token to a piece of text. This is
the loop the server and the CLI run. `converse` applies it to a whole recording.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..tokenizer import TextTokenizer
from .lmgen import LMGen


class StreamingCodec(Protocol):
    """What the pipeline needs from a codec (`mimi_codec.MimiModel` provides it)."""

    sample_rate: int
    frame_size: int

    def streaming(self, batch_size: int = 1) -> contextlib.AbstractContextManager[Any]: ...
    def encode(self, pcm: torch.Tensor) -> torch.Tensor: ...
    def decode(self, codes: torch.Tensor) -> torch.Tensor: ...


@dataclass
class DuplexFrame:
    """What one user frame gave back.

    pcm: [B, 1, frame_size] Moshi's audio, or None while the generator's delays fill.
    tokens: [B, 1 + dep_q, 1] int64 (text, audio codebooks), or None with pcm.
    texts: per batch row, the text piece to show, or None (padding, or no output yet).
    """

    pcm: torch.Tensor | None
    tokens: torch.Tensor | None
    texts: list[str | None]

    @property
    def text(self) -> str | None:
        """The text piece of batch row 0."""
        return self.texts[0]


class DuplexPipeline:
    """Codec + streaming generator + tokenizer, one frame at a time.

    Args:
        lm_gen: the generator (its sampling settings apply).
        mimi: a streaming codec whose `encode` gives at least n_q - dep_q codebooks.
        tokenizer: text tokenizer, or None to return no text.
    """

    def __init__(self, lm_gen: LMGen, mimi: StreamingCodec, tokenizer: TextTokenizer | None) -> None:
        self.lm_gen = lm_gen
        self.mimi = mimi
        self.tokenizer = tokenizer
        self.frame_size = int(mimi.frame_size)
        self.sample_rate = int(mimi.sample_rate)
        self._codec_state: Any = None
        self._batch_size = 0

    @contextlib.contextmanager
    def streaming(self, batch_size: int = 1) -> Iterator[DuplexPipeline]:
        """Context in which `step` carries codec and generator state for `batch_size` streams."""
        with contextlib.ExitStack() as stack:
            self._codec_state = stack.enter_context(self.mimi.streaming(batch_size))
            stack.enter_context(self.lm_gen.streaming(batch_size))
            self._batch_size = batch_size
            try:
                yield self
            finally:
                self._codec_state = None
                self._batch_size = 0

    def reset(self) -> None:
        """Start new conversations in the open streaming context."""
        if self._batch_size == 0:
            raise RuntimeError("reset() needs an active `with pipeline.streaming(batch_size):` block")
        if hasattr(self._codec_state, "reset"):
            self._codec_state.reset()
        self.lm_gen.reset()

    @torch.no_grad()
    def step(self, user_pcm: torch.Tensor) -> DuplexFrame:
        """Process one user frame.

        Args:
            user_pcm: [B, 1, frame_size] float audio at the codec's sample rate.
        Returns:
            `DuplexFrame` with Moshi's audio frame and text pieces (None on the first step).
        """
        if self._batch_size == 0:
            raise RuntimeError("step() needs an active `with pipeline.streaming(batch_size):` block")
        if user_pcm.dim() != 3 or user_pcm.shape[1] != 1 or user_pcm.shape[2] != self.frame_size:
            raise ValueError(f"user_pcm has shape {tuple(user_pcm.shape)}, expected [B, 1, {self.frame_size}]")
        if user_pcm.shape[0] != self._batch_size:
            raise ValueError(f"user_pcm batch {user_pcm.shape[0]} differs from the streaming batch {self._batch_size}")
        codes = self.mimi.encode(user_pcm)
        tokens = self.lm_gen.step(codes)
        if tokens is None:
            return DuplexFrame(None, None, [None] * self._batch_size)
        pcm = self.mimi.decode(tokens[:, 1:])
        texts: list[str | None] = [None] * self._batch_size
        if self.tokenizer is not None:
            texts = [self.tokenizer.piece(int(t)) for t in tokens[:, 0, 0].tolist()]
        return DuplexFrame(pcm, tokens, texts)


@dataclass
class Conversation:
    """Result of `converse`.

    pcm: [B, 1, N] Moshi's audio on the user's timeline (silence where nothing came back yet),
        N = the input length rounded up to whole frames.
    tokens: [B, 1 + dep_q, F] int64, -1 in the frames without output.
    texts: per batch row, the concatenated text pieces.
    """

    pcm: torch.Tensor
    tokens: torch.Tensor
    texts: list[str]


@torch.no_grad()
def converse(pipeline: DuplexPipeline, user_wav: torch.Tensor) -> Conversation:
    """Run a whole recording through the pipeline, frame by frame, in a fresh conversation.

    Args:
        pipeline: the pipeline (not inside a streaming block).
        user_wav: [B, 1, N] float audio at the codec's sample rate; zero-padded to whole frames.
    Returns:
        `Conversation`.
    """
    if user_wav.dim() != 3 or user_wav.shape[1] != 1:
        raise ValueError(f"user_wav has shape {tuple(user_wav.shape)}, expected [B, 1, N]")
    B, _, N = user_wav.shape
    fs = pipeline.frame_size
    frames = max(1, -(-N // fs))
    padded = torch.nn.functional.pad(user_wav, (0, frames * fs - N))
    dep_q = pipeline.lm_gen.lm.config.dep_q
    pcm_out, tok_out = [], []
    texts = [""] * B
    with pipeline.streaming(B):
        for f in range(frames):
            frame = pipeline.step(padded[:, :, f * fs:(f + 1) * fs])
            if frame.pcm is None:
                pcm_out.append(torch.zeros(B, 1, fs, dtype=padded.dtype, device=padded.device))
                tok_out.append(torch.full((B, 1 + dep_q, 1), -1, dtype=torch.long, device=padded.device))
                continue
            pcm_out.append(frame.pcm.to(padded.dtype))
            tok_out.append(frame.tokens)
            texts = [t + (p or "") for t, p in zip(texts, frame.texts)]
    return Conversation(torch.cat(pcm_out, dim=-1), torch.cat(tok_out, dim=-1), texts)
