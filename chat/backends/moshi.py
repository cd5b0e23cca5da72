"""The `moshi` backend: `moshi_lm.DuplexPipeline` (Mimi + the LM's streaming generator + text).

Per step the pipeline encodes the user's frame to Mimi codes, the generator produces Moshi's
next frame (text token + audio codes), Mimi decodes the audio and the text token becomes a
piece unless it is padding. The weights exist once (`moshi_lm.load_moshi`); each session has
its own pipeline: a weight-sharing Mimi copy and its own `LMGen` with the client's sampling
settings (over the repository's defaults).

As kyutai's server does, the very first user frame is encoded and then dropped with the
codec state reset: to the model it lies in the past, and the encoder's left padding must
apply to the first frame it actually sees.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mimi_moshi_chat.backends import BackendOptions
from mimi_moshi_chat.backends.base import ChatBackend, ChatSession, StepOutput, check_frame
from mimi_moshi_chat.protocol import SamplingSettings

if TYPE_CHECKING:
    from moshi_lm import DuplexPipeline, MoshiModels

log = logging.getLogger("mimi_moshi_chat.backends.moshi")

#: Settings of the web protocol that `LMGen` has no equivalent for.
UNSUPPORTED = ("pad_mult", "repetition_penalty", "repetition_penalty_context")


def generator_kwargs(settings: SamplingSettings) -> dict[str, Any]:
    """`LMGen` keyword arguments for the settings a client gave (the others keep the defaults).

    Args:
        settings: from the query string. The generator has one random source, seeded by
            `text_seed`, else `audio_seed`.
    """
    names = {"audio_temperature": "temp", "text_temperature": "temp_text", "audio_topk": "top_k",
             "text_topk": "top_k_text"}
    kwargs = {names[k]: v for k, v in settings.as_dict().items() if k in names}
    seed = settings.text_seed if settings.text_seed is not None else settings.audio_seed
    if seed is not None:
        kwargs["seed"] = seed
    return kwargs


class MoshiSession(ChatSession):
    """One conversation: its own pipeline inside its streaming context.

    Args:
        pipeline: this session's pipeline (weight-sharing Mimi copy, own generator).
        device: where the models run.
    """

    def __init__(self, pipeline: DuplexPipeline, device: torch.device) -> None:
        self._pipeline = pipeline
        self._device = device
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(pipeline.streaming(1))
        self._first = True

    def step(self, pcm: np.ndarray) -> StepOutput:
        """Feed one user frame, return Moshi's frame (None during the first steps) and text.

        Args:
            pcm: [1920] float32 user audio.
        """
        pcm = check_frame(pcm, self._pipeline.frame_size)
        with torch.inference_mode():
            x = torch.from_numpy(pcm).to(self._device).view(1, 1, -1)
            if self._first:
                self._first = False
                self._pipeline.mimi.encode(x)
                self._pipeline.reset()
                return StepOutput(None, None)
            frame = self._pipeline.step(x)
        if frame.pcm is None:
            return StepOutput(None, None)
        return StepOutput(frame.pcm.view(-1).float().cpu().numpy(), frame.text)

    def close(self) -> None:
        self._stack.close()


class MoshiBackend(ChatBackend):
    """Shared Moshi LM, Mimi and tokenizer.

    Args:
        models: from `moshi_lm.load_moshi`.
        device: where the models live.
    """

    name = "moshi"

    def __init__(self, models: MoshiModels, device: str | torch.device = "cpu") -> None:
        self.models = models
        self.device = torch.device(device)
        models.mimi.warmup()  # the first client's frames must not wait for kernel compilation
        self.sample_rate = int(models.mimi.sample_rate)
        self.frame_size = int(models.mimi.frame_size)

    @classmethod
    def from_options(cls, options: BackendOptions) -> MoshiBackend:
        """Load the three models; local files override the Hugging Face repository's.

        The LM runs in float32 on a CPU and in bfloat16 elsewhere; Mimi in float32.

        Args:
            options: files, repository and device.
        """
        from moshi_lm import DEFAULT_REPO, load_moshi

        dtype = torch.float32 if torch.device(options.device).type == "cpu" else torch.bfloat16
        models = load_moshi(hf_repo=options.hf_repo or DEFAULT_REPO, lm_weights=options.lm_weights,
                            lm_config=options.lm_config, mimi_weights=options.mimi_weights,
                            mimi_config=options.mimi_config, tokenizer=options.tokenizer, device=options.device,
                            dtype=dtype)
        return cls(models, device=options.device)

    def open_session(self, settings: SamplingSettings) -> MoshiSession:
        """A fresh conversation with the client's sampling settings.

        Args:
            settings: temperatures, top-k and seeds; pad_mult and the repetition penalty are
                not supported by the generator and are logged as ignored.
        """
        from moshi_lm import DuplexPipeline

        ignored = {k: v for k, v in settings.as_dict().items() if k in UNSUPPORTED}
        if ignored:
            log.info("moshi backend: ignoring unsupported sampling settings %s", ignored)
        models = self.models
        pipeline = DuplexPipeline(models.generator(**generator_kwargs(settings)), models.mimi.copy_sharing_weights(),
                                  models.tokenizer)
        return MoshiSession(pipeline, self.device)
