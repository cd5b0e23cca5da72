"""A websocket client of the chat protocol, for the terminal client, the remote backend and tests.

`ChatClient.connect` opens `/api/chat`, waits for the handshake (either form), and then
decodes what the server sends in a background task: reply audio, text pieces, metadata and
errors, each handed to an optional callback and kept for the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np

from mimi_moshi_chat.opus import OpusDecoder, OpusEncoder
from mimi_moshi_chat.protocol import Handshake, Kind, SamplingSettings, decode_message, encode_message, parse_handshake

#: Samples per frame at 24 kHz.
FRAME_SIZE = 1920


def chat_url(url: str, settings: SamplingSettings | None = None) -> str:
    """Normalise a server address to its websocket chat URL.

    Accepts "host:port", "ws://", "wss://", "http://" or "https://" URLs, with or without the
    `/api/chat` path (added when the path is empty), and appends the sampling settings as
    query parameters.

    Args:
        url: the address as a user types it.
        settings: sampling settings to send, or None.
    """
    if "://" not in url:
        url = "ws://" + url
    parts = urllib.parse.urlsplit(url)
    scheme = {"ws": "ws", "http": "ws", "wss": "wss", "https": "wss"}.get(parts.scheme)
    if scheme is None:
        raise ValueError(f"server URL {url!r} has scheme {parts.scheme!r}, expected ws, wss, http or https")
    if not parts.netloc:
        raise ValueError(f"server URL {url!r} has no host")
    path = parts.path if parts.path not in ("", "/") else "/api/chat"
    query = dict(urllib.parse.parse_qsl(parts.query))
    if settings is not None:
        query.update({k: str(v) for k, v in settings.as_dict().items()})
    return urllib.parse.urlunsplit((scheme, parts.netloc, path, urllib.parse.urlencode(query), ""))


class ServerError(ConnectionError):
    """The server refused the session or sent an error before the handshake."""


@dataclass
class Received:
    """Everything the server sent so far."""

    pcm: list[np.ndarray] = field(default_factory=list)  # decoded reply chunks, [T] float32 each
    samples: int = 0  # total reply samples
    text: list[str] = field(default_factory=list)  # text pieces in order
    errors: list[str] = field(default_factory=list)  # 0x05 messages
    metadata: list[dict[str, Any]] = field(default_factory=list)  # 0x04 messages
    audio_times: list[tuple[float, int]] = field(default_factory=list)  # (perf_counter, samples so far) per audio message

    def audio(self) -> np.ndarray:
        """All reply audio: [T] float32."""
        return np.concatenate(self.pcm) if self.pcm else np.zeros(0, dtype=np.float32)


class ChatClient:
    """One session with a chat server. Create with `await ChatClient.connect(url)`.

    Args:
        ws: the open websocket.
        http: the aiohttp session that owns it (closed with the client when owned).
        own_http: whether `close` must close `http`.
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, http: aiohttp.ClientSession, own_http: bool) -> None:
        self.ws = ws
        self._http = http
        self._own_http = own_http
        self.handshake: Handshake | None = None
        self.received = Received()
        self.on_audio: Callable[[np.ndarray], None] | None = None
        self.on_text: Callable[[str], None] | None = None
        self.on_error: Callable[[str], None] | None = None
        self.closed_by_server = asyncio.Event()
        self._encoder = OpusEncoder()
        self._decoder = OpusDecoder()
        self._reader: asyncio.Task[None] | None = None
        self.pongs: list[tuple[bytes, float]] = []

    @classmethod
    async def connect(cls, url: str, settings: SamplingSettings | None = None, timeout: float = 60.0,
                      ssl: Any = True) -> ChatClient:
        """Open a session and wait for the server's handshake.

        Args:
            url: server address (see `chat_url`).
            settings: sampling settings for the query string.
            timeout: seconds to wait for the handshake.
            ssl: passed to aiohttp: True verifies certificates, False accepts a self-signed one.

        Raises:
            ServerError: the server sent an error (e.g. busy) or closed before the handshake.
        """
        http = aiohttp.ClientSession()
        try:
            ws = await http.ws_connect(chat_url(url, settings), ssl=ssl, heartbeat=None, max_msg_size=1 << 22)
            client = cls(ws, http, own_http=True)
            await asyncio.wait_for(client._await_handshake(), timeout)
        except BaseException:
            await http.close()
            raise
        client._reader = asyncio.create_task(client._read_loop())
        return client

    async def _await_handshake(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.BINARY:
                break
            message = decode_message(msg.data)
            if message.kind == Kind.HANDSHAKE:
                self.handshake = parse_handshake(message.payload)
                return
            if message.kind == Kind.ERROR:
                raise ServerError(message.payload.decode("utf-8", "replace"))
            self._handle(message.kind, message.payload)
        raise ServerError(f"the server closed the connection before the handshake (code {self.ws.close_code})")

    def _handle(self, kind: Kind, payload: bytes) -> None:
        r = self.received
        if kind == Kind.AUDIO:
            pcm = self._decoder.decode(payload)
            if len(pcm):
                r.pcm.append(pcm)
                r.samples += len(pcm)
                r.audio_times.append((time.perf_counter(), r.samples))
                if self.on_audio:
                    self.on_audio(pcm)
        elif kind == Kind.TEXT:
            piece = payload.decode("utf-8", "replace")
            r.text.append(piece)
            if self.on_text:
                self.on_text(piece)
        elif kind == Kind.ERROR:
            text = payload.decode("utf-8", "replace")
            r.errors.append(text)
            if self.on_error:
                self.on_error(text)
        elif kind == Kind.METADATA:
            with contextlib.suppress(ValueError):
                r.metadata.append(json.loads(payload.decode("utf-8")))
        elif kind == Kind.PING:
            self.pongs.append((payload, time.perf_counter()))

    async def _read_loop(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.BINARY:
                    continue
                try:
                    message = decode_message(msg.data)
                    self._handle(message.kind, message.payload)
                except ValueError as e:
                    self.received.errors.append(f"client: {e}")
        finally:
            self.closed_by_server.set()

    async def send_pcm(self, pcm: np.ndarray) -> None:
        """Encode and send user audio (any length; the encoder buffers partial frames).

        Args:
            pcm: [T] float32 at 24 kHz.
        """
        data = self._encoder.encode(pcm)
        if data:
            await self.ws.send_bytes(encode_message(Kind.AUDIO, data))

    async def send_raw(self, data: bytes) -> None:
        """Send a raw binary message (kind byte included)."""
        await self.ws.send_bytes(data)

    async def wait_for_samples(self, samples: int, timeout: float) -> bool:
        """Wait until `samples` reply samples arrived; False on timeout or server close."""
        deadline = time.perf_counter() + timeout
        while self.received.samples < samples:
            if self.closed_by_server.is_set() or time.perf_counter() > deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    async def close(self) -> None:
        """Close the websocket and stop reading."""
        with contextlib.suppress(Exception):
            await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader
        if self._own_http:
            await self._http.close()

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


@dataclass(frozen=True)
class Conversation:
    """The result of streaming a recording to a server."""

    reply: np.ndarray  # [T] float32 reply audio, as long as the input
    text: str  # the text pieces joined
    errors: tuple[str, ...]  # error messages from the server
    latency_ms: np.ndarray  # [frames] time from sending user frame k to receiving reply frame k


async def stream_file(client: ChatClient, pcm: np.ndarray, realtime: bool = True, flush_frames: int = 40,
                      timeout: float = 30.0) -> Conversation:
    """Send a recording frame by frame and collect a reply of the same length.

    Frames are sent every 80 ms when `realtime` (else as fast as the server takes them);
    after the last one, silent frames keep the conversation going (at most `flush_frames`)
    until the reply covers the input, for backends whose first steps return nothing.

    Args:
        client: a connected client.
        pcm: [T] float32 at 24 kHz.
        realtime: pace frames at the audio's own speed.
        flush_frames: at most this many silent frames after the input.
        timeout: seconds to wait for the reply after the last frame.
    """
    total = len(pcm)
    n_frames = -(-total // FRAME_SIZE)
    padded = np.zeros(n_frames * FRAME_SIZE, dtype=np.float32)
    padded[:total] = pcm
    sent_at: list[float] = []
    start = time.perf_counter()
    for k in range(n_frames):
        if realtime:
            delay = start + k * FRAME_SIZE / 24000 - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await client.send_pcm(padded[k * FRAME_SIZE:(k + 1) * FRAME_SIZE])
        sent_at.append(time.perf_counter())
        if client.closed_by_server.is_set():
            break
    silence = np.zeros(FRAME_SIZE, dtype=np.float32)
    for _ in range(flush_frames):
        if await client.wait_for_samples(total, timeout=0.5 if realtime else 1.0):
            break
        if client.closed_by_server.is_set():
            break
        await client.send_pcm(silence)
    await client.wait_for_samples(total, timeout)
    reply = client.received.audio()[:total]
    if len(reply) < total:
        reply = np.concatenate([reply, np.zeros(total - len(reply), dtype=np.float32)])
    latency = frame_latencies(sent_at, client.received.audio_times)
    return Conversation(reply, "".join(client.received.text), tuple(client.received.errors), latency)


def frame_latencies(sent_at: list[float], audio_times: list[tuple[float, int]]) -> np.ndarray:
    """Per-frame latency: when user frame k was sent -> when reply sample (k + 1) * 1920 arrived.

    Args:
        sent_at: perf_counter time of each sent frame.
        audio_times: (perf_counter, total reply samples) per received audio message.
    """
    out = []
    j = 0
    for k, t in enumerate(sent_at):
        need = (k + 1) * FRAME_SIZE
        while j < len(audio_times) and audio_times[j][1] < need:
            j += 1
        if j == len(audio_times):
            break
        out.append((audio_times[j][0] - t) * 1000)
    return np.asarray(out, dtype=np.float64)
