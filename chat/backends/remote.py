"""The `remote` backend: relay each session to another server of the same protocol.

Each session opens its own websocket to the remote server (e.g. kyutai's own, or another
`moshi serve`), forwarding the client's sampling settings. The websocket runs on a private
event loop in a thread of its own, so the blocking `step` interface works as for the local
backends: a step sends the user frame and returns one reply frame if one has arrived (it
waits up to `wait_s` for it), and the text pieces received since the previous step.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import numpy as np

from mimi_moshi_chat.backends.base import FRAME_SIZE, ChatBackend, ChatSession, StepOutput, check_frame
from mimi_moshi_chat.client import ChatClient
from mimi_moshi_chat.protocol import SamplingSettings

T = TypeVar("T")


class RemoteSession(ChatSession):
    """One relayed conversation.

    Args:
        url: the remote server.
        settings: forwarded in the query string.
        wait_s: how long a step waits for a reply frame before returning none.
        connect_timeout: seconds to wait for the remote handshake.
    """

    def __init__(self, url: str, settings: SamplingSettings, wait_s: float = 0.06,
                 connect_timeout: float = 30.0) -> None:
        self._wait_s = wait_s
        self._lock = threading.Condition()
        self._audio = np.zeros(0, dtype=np.float32)
        self._text: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chat-remote", daemon=True)
        self._thread.start()
        try:
            self._client = self._call(ChatClient.connect(url, settings, timeout=connect_timeout),
                                                  connect_timeout + 5)
        except BaseException:
            self._stop_loop()
            raise
        self._client.on_audio = self._on_audio
        self._client.on_text = self._on_text

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run `coro` on the session's own event loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _on_audio(self, pcm: np.ndarray) -> None:
        with self._lock:
            self._audio = np.concatenate([self._audio, pcm])
            self._lock.notify_all()

    def _on_text(self, piece: str) -> None:
        with self._lock:
            self._text.append(piece)

    def step(self, pcm: np.ndarray) -> StepOutput:
        """Send one frame to the remote server; return a reply frame if one is there.

        Args:
            pcm: [1920] float32 user audio.

        Raises:
            ConnectionError: the remote server closed the session or reported an error.
        """
        pcm = check_frame(pcm)
        if self._client.closed_by_server.is_set():
            errors = "; ".join(self._client.received.errors) or "connection closed"
            raise ConnectionError(f"the remote server ended the session: {errors}")
        self._call(self._client.send_pcm(pcm), 10.0)
        deadline = time.monotonic() + self._wait_s
        with self._lock:
            while len(self._audio) < FRAME_SIZE and (left := deadline - time.monotonic()) > 0:
                self._lock.wait(left)
            frame = None
            if len(self._audio) >= FRAME_SIZE:
                frame, self._audio = self._audio[:FRAME_SIZE], self._audio[FRAME_SIZE:]
            text = "".join(self._text) or None
            self._text.clear()
        return StepOutput(frame, text)

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def close(self) -> None:
        try:
            self._call(self._client.close(), 10.0)
        finally:
            self._stop_loop()


class RemoteBackend(ChatBackend):
    """Relays sessions to `url` (ws://host:port, wss://..., or host:port).

    Args:
        url: the remote server.
        wait_s: per-step wait for a reply frame.
    """

    name = "remote"

    def __init__(self, url: str, wait_s: float = 0.06) -> None:
        from mimi_moshi_chat.client import chat_url

        chat_url(url)  # validates the address now rather than at the first session
        self.url = url
        self.wait_s = wait_s

    def open_session(self, settings: SamplingSettings) -> RemoteSession:
        """Connect to the remote server (raises if it refuses, e.g. when busy).

        Args:
            settings: forwarded to the remote server.
        """
        return RemoteSession(self.url, settings, wait_s=self.wait_s)
