"""The `echo` backend: the user's own speech through the Mimi round trip, a fixed delay later.

No language model: each frame is encoded to Mimi codes and decoded again with the session's
own streaming state, then held back `delay_frames` frames (silence until then). It runs the
whole pipeline of the server (Opus, framing, the codec, threads) on a CPU, and its output is
exactly predictable: reply frame t + delay equals the streaming round trip of input frame t.
"""

from __future__ import annotations

import collections
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from mimi_moshi_chat.backends.base import ChatBackend, ChatSession, StepOutput, check_frame
from mimi_moshi_chat.protocol import SamplingSettings

if TYPE_CHECKING:
    from mimi_codec import MimiModel

#: Default delay: 12 frames of 80 ms.
DEFAULT_DELAY_FRAMES = 12


class EchoSession(ChatSession):
    """One conversation with the echo: its own Mimi streaming state and delay line.

    Args:
        mimi: this session's model (`MimiModel.copy_sharing_weights`).
        delay_frames: frames of silence before the echo starts.
        device: where the codec runs.
    """

    def __init__(self, mimi: MimiModel, delay_frames: int, device: torch.device) -> None:
        self._mimi = mimi
        self._device = device
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(mimi.streaming(1))
        silence = np.zeros(mimi.frame_size, dtype=np.float32)
        self._line: collections.deque[np.ndarray] = collections.deque([silence] * delay_frames)

    def step(self, pcm: np.ndarray) -> StepOutput:
        """Round-trip one frame and return the one that leaves the delay line.

        Args:
            pcm: [1920] float32 user audio.
        """
        pcm = check_frame(pcm, self._mimi.frame_size)
        with torch.inference_mode():
            x = torch.from_numpy(pcm).to(self._device).view(1, 1, -1)
            codes = self._mimi.encode(x)
            y = self._mimi.decode(codes)
        self._line.append(y.view(-1).float().cpu().numpy())
        return StepOutput(self._line.popleft(), None)

    def close(self) -> None:
        self._stack.close()
        self._line.clear()


class EchoBackend(ChatBackend):
    """Mimi round trip with a delay, one weight-sharing model copy per session.

    Args:
        mimi: a loaded Mimi model (from `mimi_codec.load_mimi`).
        delay_frames: frames (80 ms each) between a user frame and its echo.
        device: where `mimi` lives.
    """

    name = "echo"

    def __init__(self, mimi: MimiModel, delay_frames: int = DEFAULT_DELAY_FRAMES,
                 device: str | torch.device = "cpu") -> None:
        if delay_frames < 0:
            raise ValueError(f"echo delay {delay_frames} frames is negative, expected >= 0")
        self.mimi = mimi
        self.delay_frames = delay_frames
        self.device = torch.device(device)
        mimi.warmup()  # the first client's frames must not wait for kernel compilation
        self.sample_rate = int(mimi.sample_rate)
        self.frame_size = int(mimi.frame_size)

    @classmethod
    def from_files(cls, weights: str | Path | None, config: str | Path | None, *, device: str = "cpu",
                   delay_frames: int = DEFAULT_DELAY_FRAMES) -> EchoBackend:
        """Load Mimi from a local file, or the official checkpoint from Hugging Face when `weights` is None.

        Args:
            weights: Mimi safetensors file, or None for the official one.
            config: Mimi JSON config (official schema), or None for the official one.
            device: "cpu", "cuda", ...
            delay_frames: echo delay in frames.
        """
        from mimi_codec import load_mimi

        mimi = load_mimi(weights=weights, config=config, device=device, num_codebooks=8)
        return cls(mimi, delay_frames=delay_frames, device=device)

    def open_session(self, settings: SamplingSettings) -> EchoSession:
        """A fresh session; the echo has no sampling, so `settings` are only logged by the server.

        Args:
            settings: ignored.
        """
        return EchoSession(self.mimi.copy_sharing_weights(), self.delay_frames, self.device)
