"""The `moshi` backend: Mimi + the Moshi LM's streaming generator + the text tokenizer.

Per step: the user's frame is encoded to Mimi codes, `LMGen.step` produces Moshi's next
frame (text token + audio codes), Mimi decodes the audio, and the text token becomes a
piece unless it is padding. The weights exist once; each session has its own Mimi clone,
its own `LMGen` (with the client's sampling settings) and its own generator state.

As kyutai's server does, the very first user frame is encoded and then dropped with the
encoder state reset: to the model it lies in the past, and the encoder's left padding must
apply to the first frame it actually sees.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from mimi_moshi_chat.backends import BackendOptions
from mimi_moshi_chat.backends._sharing import clone_sharing_weights
from mimi_moshi_chat.backends.base import ChatBackend, ChatSession, StepOutput, check_frame
from mimi_moshi_chat.protocol import SamplingSettings

if TYPE_CHECKING:
    from sentencepiece import SentencePieceProcessor

    from mimi_codec import MimiModel
    from moshi_lm import LMGen, LMModel

log = logging.getLogger("mimi_moshi_chat.backends.moshi")


@dataclass(frozen=True)
class GenDefaults:
    """Sampling used when the client's query string does not say (kyutai's defaults)."""

    audio_temperature: float = 0.8  # temperature of Moshi's audio tokens
    audio_topk: int = 250  # top-k of Moshi's audio tokens
    text_temperature: float = 0.7  # temperature of the text token
    text_topk: int = 25  # top-k of the text token


class MoshiSession(ChatSession):
    """One conversation: a Mimi clone, an `LMGen` and its state.

    Args:
        gen: this session's generator (owns the sampling settings).
        mimi: this session's Mimi (a weight-sharing clone).
        tokenizer: SentencePiece processor of the text stream.
        device: where the models run.
    """

    def __init__(self, gen: LMGen, mimi: MimiModel, tokenizer: SentencePieceProcessor, device: torch.device) -> None:
        self._gen = gen
        self._mimi = mimi
        self._tokenizer = tokenizer
        self._device = device
        self._stack = contextlib.ExitStack()
        self._mimi_state = self._stack.enter_context(mimi.streaming(1))
        self._state = gen.new_state(1)
        cfg = gen.lm.config
        self._silent_tokens = {cfg.existing_text_padding_id, cfg.existing_text_end_padding_id}
        self._first = True

    def step(self, pcm: np.ndarray) -> StepOutput:
        """Feed one user frame, return Moshi's frame (None during the first steps) and text.

        Args:
            pcm: [1920] float32 user audio.
        """
        pcm = check_frame(pcm, self._mimi.frame_size)
        with torch.inference_mode():
            x = torch.from_numpy(pcm).to(self._device).view(1, 1, -1)
            codes = self._mimi.encode(x)
            if self._first:
                self._first = False
                self._mimi_state.reset()
                return StepOutput(None, None)
            tokens = self._gen.step(codes, self._state)
            if tokens is None:
                return StepOutput(None, None)
            audio = self._mimi.decode(tokens[:, 1:])
        text_id = int(tokens[0, 0, 0])
        text = None
        if text_id not in self._silent_tokens:
            text = self._tokenizer.id_to_piece(text_id).replace("\u2581", " ")
        return StepOutput(audio.view(-1).float().cpu().numpy(), text)

    def close(self) -> None:
        self._stack.close()


class MoshiBackend(ChatBackend):
    """Shared Moshi LM, Mimi and tokenizer.

    Args:
        lm: a loaded `moshi_lm.LMModel`.
        mimi: a loaded `mimi_codec.MimiModel` giving `lm.config.dep_q` codebooks.
        tokenizer: `sentencepiece.SentencePieceProcessor` of the text stream.
        device: where the models live.
        defaults: sampling used when a client gives none.
    """

    name = "moshi"

    def __init__(self, lm: LMModel, mimi: MimiModel, tokenizer: SentencePieceProcessor,
                 device: str | torch.device = "cpu", defaults: GenDefaults = GenDefaults()) -> None:
        self.lm = lm
        self.mimi = mimi
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.defaults = defaults
        self.sample_rate = int(mimi.sample_rate)
        self.frame_size = int(mimi.frame_size)

    @classmethod
    def from_options(cls, options: BackendOptions) -> MoshiBackend:
        """Load the three models; local files override the Hugging Face repository's.

        Args:
            options: files, repository and device.
        """
        import sentencepiece
        from mimi_codec import load_mimi
        from moshi_lm import DEFAULT_REPO, load_lm

        repo = options.hf_repo or DEFAULT_REPO
        files: dict[str, str] = {}
        if options.mimi_weights is None or options.tokenizer is None or options.lm_weights is None:
            from moshi_lm.loading import resolve_repo_files

            _, files = resolve_repo_files(repo)

        def local_or_download(path: str | None, key: str) -> str:
            if path is not None:
                return path
            from moshi_lm.loading import hf_download

            return str(hf_download(repo, files[key]))

        dtype = torch.float32 if torch.device(options.device).type == "cpu" else torch.bfloat16
        lm = load_lm(options.lm_weights, options.lm_config, device=options.device, dtype=dtype, hf_repo=repo)
        mimi = load_mimi(weights=local_or_download(options.mimi_weights, "mimi_name"), config=options.mimi_config,
                         device=options.device, num_codebooks=lm.config.dep_q)
        tokenizer = sentencepiece.SentencePieceProcessor(model_file=local_or_download(options.tokenizer, "tokenizer_name"))
        if tokenizer.vocab_size() < lm.config.text_card:
            raise ValueError(f"tokenizer has {tokenizer.vocab_size()} pieces, the LM's text_card is {lm.config.text_card}")
        return cls(lm, mimi, tokenizer, device=options.device)

    def open_session(self, settings: SamplingSettings) -> MoshiSession:
        """A fresh conversation with the client's sampling settings.

        Args:
            settings: temperatures, top-k and seeds; pad_mult and the repetition penalty are
                not supported by the generator and are logged as ignored.
        """
        from moshi_lm import LMGen

        d = self.defaults
        ignored = {k: v for k, v in settings.as_dict().items()
                   if k in ("pad_mult", "repetition_penalty", "repetition_penalty_context")}
        if ignored:
            log.info("moshi backend: ignoring unsupported sampling settings %s", ignored)
        seed = settings.text_seed if settings.text_seed is not None else settings.audio_seed
        gen = LMGen(self.lm, use_sampling=True,
                    temp=d.audio_temperature if settings.audio_temperature is None else settings.audio_temperature,
                    temp_text=d.text_temperature if settings.text_temperature is None else settings.text_temperature,
                    top_k=d.audio_topk if settings.audio_topk is None else settings.audio_topk,
                    top_k_text=d.text_topk if settings.text_topk is None else settings.text_topk,
                    seed=seed)
        return MoshiSession(gen, clone_sharing_weights(self.mimi), self.tokenizer, self.device)
