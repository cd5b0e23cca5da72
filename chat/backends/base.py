"""What the server needs from a model: one user frame in, one reply frame and maybe text out.

A `ChatBackend` holds what sessions share (weights, a connection target) and opens one
`ChatSession` per client; a session owns all of its streaming state, so any number of
sessions can run side by side. `step` is blocking and runs on a worker thread, never on
the server's event loop.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

from mimi_moshi_chat.protocol import SamplingSettings

#: Samples per frame at 24 kHz (Mimi's 12.5 Hz frame rate).
FRAME_SIZE = 1920


@dataclass(frozen=True)
class StepOutput:
    """What one step produced."""

    pcm: np.ndarray | None  # [FRAME_SIZE] float32 reply audio, None while the model has none yet
    text: str | None  # a text piece (SentencePiece "▁" as a space), None when nothing was said


class ChatSession(abc.ABC):
    """The state of one conversation."""

    @abc.abstractmethod
    def step(self, pcm: np.ndarray) -> StepOutput:
        """Feed one frame of the user's audio.

        Args:
            pcm: [FRAME_SIZE] float32 at 24 kHz.
        """

    def close(self) -> None:
        """Free what the session holds; called once, from a worker thread."""


class ChatBackend(abc.ABC):
    """Shared resources plus a factory of sessions."""

    #: Short name shown in logs and metadata.
    name: str = "backend"
    sample_rate: int = 24000
    frame_size: int = FRAME_SIZE

    @abc.abstractmethod
    def open_session(self, settings: SamplingSettings) -> ChatSession:
        """Start a conversation; blocking, called from a worker thread.

        Args:
            settings: sampling settings from the client's query string.
        """

    def close(self) -> None:
        """Free the shared resources."""


def check_frame(pcm: np.ndarray, frame_size: int = FRAME_SIZE) -> np.ndarray:
    """Return `pcm` as a contiguous [frame_size] float32 array.

    Args:
        pcm: [frame_size] audio.

    Raises:
        ValueError: a different shape.
    """
    pcm = np.ascontiguousarray(pcm, dtype=np.float32)
    if pcm.shape != (frame_size,):
        raise ValueError(f"frame has shape {tuple(pcm.shape)}, expected ({frame_size},)")
    return pcm
