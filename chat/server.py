"""The chat server: aiohttp, the websocket protocol at `/api/chat`, the web page at `/`.

Each websocket is one session with its own backend state. Audio arrives as Ogg/Opus, is
cut into 1920-sample frames and queued; a per-session worker runs the backend's blocking
`step` on a thread pool (the event loop only moves bytes) and sends back Opus audio and
text. Up to `max_sessions` run at once; one more gets a 0x05 error and a clean close.
Broken messages get a 0x05 error and are dropped; the session goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import numpy as np
from aiohttp import web

from mimi_moshi_chat.backends.base import ChatBackend, ChatSession, StepOutput
from mimi_moshi_chat.opus import OpusDecoder, OpusEncoder
from mimi_moshi_chat.protocol import (
    ControlAction, Kind, SamplingSettings, decode_message, encode_message, error_message, metadata_message,
    text_message,
)

log = logging.getLogger("mimi_moshi_chat.server")
T = TypeVar("T")

#: Folder of the web page's files, shipped inside the package.
WEB_DIR = Path(__file__).parent / "web"
#: Websocket close code for "try again later" (RFC 6455 registry).
CLOSE_TRY_AGAIN_LATER = 1013
#: Websocket close code for a policy violation, used for bad query parameters.
CLOSE_POLICY_VIOLATION = 1008


@dataclass
class SessionStats:
    """What the server logs about one session when it ends."""

    id: int  # session number, counting from 1 since the server started
    peer: str  # client address
    frames_in: int = 0  # user frames fed to the backend
    frames_out: int = 0  # reply frames sent back
    text_pieces: int = 0  # text messages sent back
    errors: int = 0  # error messages sent to the client
    dropped: int = 0  # user frames dropped because the backend fell behind
    step_ms: list[float] = field(default_factory=list)  # backend step time per frame
    lag_ms: list[float] = field(default_factory=list)  # frame complete -> its reply sent

    def summary(self) -> str:
        """One log line."""
        def stats(values: list[float]) -> str:
            if not values:
                return "n/a"
            a = np.asarray(values)
            return f"mean {a.mean():.1f} p50 {np.median(a):.1f} p95 {np.percentile(a, 95):.1f} max {a.max():.1f} ms"
        return (f"frames in {self.frames_in} out {self.frames_out}, text {self.text_pieces}, errors {self.errors}, "
                f"dropped {self.dropped}; step {stats(self.step_ms)}; lag {stats(self.lag_ms)}")


class ChatServer:
    """Sessions of one backend behind the websocket protocol.

    Args:
        backend: creates the per-session model state.
        max_sessions: sessions served at once; more get an error and a close.
        max_pending_frames: queued user frames per session before new ones are dropped.
        heartbeat_s: websocket ping interval that detects clients gone without a close.
    """

    def __init__(self, backend: ChatBackend, max_sessions: int = 1, max_pending_frames: int = 250,
                 heartbeat_s: float = 10.0) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions {max_sessions} must be >= 1")
        self.backend = backend
        self.max_sessions = max_sessions
        self.max_pending_frames = max_pending_frames
        self.heartbeat_s = heartbeat_s
        self.active: dict[int, SessionStats] = {}
        self.served = 0
        self._ids = itertools.count(1)
        self._executor = ThreadPoolExecutor(max_workers=max_sessions + 1, thread_name_prefix="chat-step")

    def make_app(self) -> web.Application:
        """The aiohttp application: `/`, `/static/*`, `/api/chat`, `/api/status`."""
        app = web.Application()
        app.router.add_get("/", self._handle_index)
        app.router.add_get("/api/chat", self._handle_chat)
        app.router.add_get("/api/status", self._handle_status)
        app.router.add_static("/static/", WEB_DIR, follow_symlinks=False)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _cleanup(self, app: web.Application) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self.backend.close()

    async def _handle_index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(WEB_DIR / "index.html")

    async def _handle_status(self, request: web.Request) -> web.Response:
        return web.json_response({
            "backend": self.backend.name, "active_sessions": len(self.active), "max_sessions": self.max_sessions,
            "sessions_served": self.served,
        })

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking call (a model step, opening or closing a session) on the worker threads."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _handle_chat(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=self.heartbeat_s, max_msg_size=1 << 20)
        await ws.prepare(request)
        stats = SessionStats(next(self._ids), request.remote or "?")
        try:
            settings = SamplingSettings.from_query(request.query)
        except ValueError as e:
            log.warning("session %d: rejected: %s", stats.id, e)
            await ws.send_bytes(error_message(str(e)))
            await ws.close(code=CLOSE_POLICY_VIOLATION, message=b"bad query parameter")
            return ws
        if len(self.active) >= self.max_sessions:
            log.warning("session %d from %s: refused, %d sessions busy", stats.id, stats.peer, len(self.active))
            await ws.send_bytes(error_message(
                f"server busy: all {self.max_sessions} sessions are in use, try again later"))
            await ws.close(code=CLOSE_TRY_AGAIN_LATER, message=b"server busy")
            return ws
        self.active[stats.id] = stats
        try:
            log.info("session %d from %s: opening (%s backend, settings %s)", stats.id, stats.peer,
                     self.backend.name, settings.as_dict())
            session = await self._run(self.backend.open_session, settings)
            await self._converse(ws, session, settings, stats)
        except Exception as e:  # a backend failure ends this session, never the server
            log.exception("session %d: failed: %s", stats.id, e)
            stats.errors += 1
            with contextlib.suppress(Exception):
                await ws.send_bytes(error_message(f"server error: {e}"))
        finally:
            self.active.pop(stats.id, None)
            self.served += 1
            with contextlib.suppress(Exception):
                await ws.close()
            log.info("session %d: closed; %s", stats.id, stats.summary())
        return ws

    async def _converse(self, ws: web.WebSocketResponse, session: ChatSession, settings: SamplingSettings,
                        stats: SessionStats) -> None:
        """Handshake, then receive messages until the client leaves; closes the session at the end."""
        frames: asyncio.Queue[tuple[np.ndarray, float] | None] = asyncio.Queue()
        decoder = OpusDecoder(self.backend.sample_rate)
        encoder = OpusEncoder(self.backend.sample_rate)
        pending = np.zeros(0, dtype=np.float32)
        current: ChatSession | None = session

        async def send_error(text: str) -> None:
            stats.errors += 1
            log.warning("session %d: %s", stats.id, text)
            if not ws.closed:
                with contextlib.suppress(ConnectionError):
                    await ws.send_bytes(error_message(text))

        def step(frame: np.ndarray) -> tuple[StepOutput, bytes, float]:
            start = time.perf_counter()
            assert current is not None, "a step runs only while a session is open"
            out = current.step(frame)
            opus = encoder.encode(out.pcm) if out.pcm is not None else b""
            return out, opus, (time.perf_counter() - start) * 1000

        async def work() -> None:
            while (item := await frames.get()) is not None:
                frame, arrived = item
                out, opus, step_ms = await self._run(step, frame)
                stats.frames_in += 1
                stats.step_ms.append(step_ms)
                if ws.closed:
                    continue
                try:
                    if out.pcm is not None:
                        stats.frames_out += 1
                        if opus:
                            await ws.send_bytes(encode_message(Kind.AUDIO, opus))
                        stats.lag_ms.append((time.perf_counter() - arrived) * 1000)
                    if out.text:
                        stats.text_pieces += 1
                        await ws.send_bytes(text_message(out.text))
                except ConnectionError:  # the client went away; the receive loop ends too
                    continue
                log.debug("session %d: frame %d step %.1f ms", stats.id, stats.frames_in, step_ms)

        worker: asyncio.Task[None] | None = None
        try:
            await ws.send_bytes(encode_message(Kind.HANDSHAKE))
            await ws.send_bytes(metadata_message({
                "backend": self.backend.name, "session": stats.id, "sample_rate": self.backend.sample_rate,
                "frame_size": self.backend.frame_size, "settings": settings.as_dict()}))
            worker = asyncio.create_task(work())
            async for msg in ws:
                if worker is not None and worker.done():
                    break
                if msg.type == aiohttp.WSMsgType.ERROR:
                    log.warning("session %d: websocket error %s", stats.id, ws.exception())
                    break
                if msg.type != aiohttp.WSMsgType.BINARY:
                    await send_error(f"{msg.type.name.lower()} websocket message: expected binary messages "
                                     "that start with a kind byte")
                    continue
                try:
                    message = decode_message(msg.data)
                except ValueError as e:
                    await send_error(str(e))
                    continue
                if message.kind == Kind.AUDIO:
                    try:
                        pcm = decoder.decode(message.payload)
                    except ValueError as e:
                        await send_error(f"bad audio message: {e}")
                        continue
                    pending = np.concatenate([pending, pcm])
                    now = time.perf_counter()
                    size = self.backend.frame_size
                    while len(pending) >= size:
                        frame, pending = pending[:size], pending[size:]
                        if frames.qsize() >= self.max_pending_frames:
                            stats.dropped += 1
                            if stats.dropped == 1:
                                await send_error(f"the backend is falling behind: over {self.max_pending_frames} "
                                                 "frames queued, dropping audio")
                            continue
                        frames.put_nowait((frame, now))
                elif message.kind == Kind.PING:
                    await ws.send_bytes(encode_message(Kind.PING, message.payload))
                elif message.kind == Kind.CONTROL:
                    if len(message.payload) != 1 or message.payload[0] not in set(ControlAction):
                        await send_error(f"bad control message {message.payload!r}: expected one byte 0..3")
                        continue
                    action = ControlAction(message.payload[0])
                    log.info("session %d: control %s", stats.id, action.name.lower())
                    if action == ControlAction.RESTART:
                        while not frames.empty():
                            frames.get_nowait()
                        frames.put_nowait(None)
                        await worker
                        worker = None
                        old, current = current, None
                        if old is not None:
                            await self._run(old.close)
                        current = await self._run(self.backend.open_session, settings)
                        frames = asyncio.Queue()
                        worker = asyncio.create_task(work())
                elif message.kind in (Kind.HANDSHAKE, Kind.METADATA):
                    log.info("session %d: client sent %s (%d bytes), ignored", stats.id, message.kind.name.lower(),
                             len(message.payload))
                else:
                    await send_error(f"unexpected message kind {int(message.kind):#04x} ({message.kind.name.lower()}) "
                                     "from a client: expected audio, control or ping")
        finally:
            try:
                if worker is not None:  # let it finish the step it is in: never close a session mid-step
                    while not frames.empty():
                        frames.get_nowait()
                    frames.put_nowait(None)
                    await worker
            finally:
                if current is not None:
                    await self._run(current.close)


def ssl_context_from_dir(folder: str | os.PathLike[str]) -> ssl.SSLContext:
    """A server TLS context from `folder`/cert.pem and `folder`/key.pem.

    Args:
        folder: the folder holding both files.

    Raises:
        FileNotFoundError: either file is missing.
    """
    folder = Path(folder)
    cert, key = folder / "cert.pem", folder / "key.pem"
    for path in (cert, key):
        if not path.is_file():
            raise FileNotFoundError(f"--ssl folder {folder} has no {path.name} (expected cert.pem and key.pem)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    return context


def run_server(backend: ChatBackend, host: str = "127.0.0.1", port: int = 8998, ssl_dir: str | None = None,
               max_sessions: int = 1) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM), then close the backend.

    Args:
        backend: the loaded backend.
        host: address to listen on.
        port: TCP port; 0 picks a free one (the log says which).
        ssl_dir: folder with cert.pem and key.pem for https/wss, or None for plain http.
        max_sessions: sessions served at once.
    """
    context = ssl_context_from_dir(ssl_dir) if ssl_dir else None
    server = ChatServer(backend, max_sessions=max_sessions)
    scheme = "https" if context else "http"

    async def main() -> None:
        runner = web.AppRunner(server.make_app(), handle_signals=True)
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=context)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []  # the real port when 0 was asked
        bound = sockets[0].getsockname()[1] if sockets else port
        log.info("serving the %s backend at %s://%s:%d/ (websocket /api/chat, up to %d sessions)",
                 backend.name, scheme, host, bound, max_sessions)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(main())
    except (KeyboardInterrupt, web.GracefulExit):
        log.info("server stopped")
