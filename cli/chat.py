"""`moshi chat`: talk to a chat server from the terminal (a file or the microphone)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np

from mimi_moshi_cli._app import fail
from mimi_moshi_cli._options import model_file_options
from mimi_moshi_cli._io import atomic_path

if TYPE_CHECKING:
    from rich.console import Console

    from mimi_moshi_chat.backends import BackendOptions
    from mimi_moshi_chat.client import ChatClient

SAMPLE_RATE = 24000


def read_speech(path: str) -> np.ndarray:
    """Read an audio file as [T] float32 mono at 24 kHz (channels averaged, resampled).

    Args:
        path: any file soundfile reads (wav, flac, ogg, mp3 with a recent libsndfile).
    """
    import soundfile as sf
    import soxr

    data, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE)
    return np.ascontiguousarray(mono, dtype=np.float32)


@contextlib.asynccontextmanager
async def local_server(backend: str, options: BackendOptions, max_sessions: int = 1) -> AsyncIterator[str]:
    """Run a backend in-process behind a server on a free localhost port; yields its ws:// URL.

    Args:
        backend: backend name (see `mimi_moshi_chat.backends.BACKENDS`).
        options: its model files and device.
        max_sessions: sessions it serves at once.
    """
    from aiohttp import web

    from mimi_moshi_chat.backends import load_backend
    from mimi_moshi_chat.server import ChatServer

    loaded = await asyncio.get_running_loop().run_in_executor(None, load_backend, backend, options)
    runner = web.AppRunner(ChatServer(loaded, max_sessions=max_sessions).make_app(), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"ws://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def converse(url: str | None, backend: str | None, options: BackendOptions, input_path: str | None,
                   output: str | None, fast: bool, force: bool, insecure: bool) -> None:
    """Connect (or start a local backend), talk from a file or the microphone, save the reply.

    Args:
        url: server address, or None to run `backend` here.
        backend: backend to run in-process when `url` is None.
        options: model files for an in-process backend.
        input_path: recording to speak, or None for the microphone.
        output: where to save the reply (wav), or None.
        fast: send the recording as fast as the server takes it.
        force: overwrite `output`.
        insecure: accept a self-signed certificate.
    """
    from rich.console import Console

    from mimi_moshi_chat.client import ChatClient, stream_file

    console = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    pcm = read_speech(input_path) if input_path else None
    async with contextlib.AsyncExitStack() as stack:
        if url is None:
            err.print(f"[dim]loading the {backend} backend...[/]")
            url = await stack.enter_async_context(local_server(backend or "moshi", options))
        err.print(f"[dim]connecting to {url}[/]")
        client = await ChatClient.connect(url, ssl=not insecure)
        stack.push_async_callback(client.close)
        client.on_text = lambda piece: console.print(piece, end="", soft_wrap=True)
        client.on_error = lambda text: err.print(f"[red]server: {text}[/]")
        interrupted = False
        try:
            if pcm is not None:
                err.print(f"[dim]streaming {input_path} ({len(pcm) / SAMPLE_RATE:.2f} s{', fast' if fast else ''})[/]")
                result = await stream_file(client, pcm, realtime=not fast)
                reply, latency = result.reply, result.latency_ms
            else:
                await microphone_loop(client, err)
                reply, latency = client.received.audio(), np.zeros(0)
        except asyncio.CancelledError:
            interrupted = True
            reply, latency = client.received.audio(), np.zeros(0)
        console.print()
        if output:
            import soundfile as sf

            with atomic_path(output, force=force) as tmp:
                sf.write(str(tmp), reply, SAMPLE_RATE, format="WAV", subtype="FLOAT")
            err.print(f"saved {len(reply) / SAMPLE_RATE:.2f} s of reply to {output}")
        if len(latency):
            err.print(f"latency per frame: mean {latency.mean():.1f} ms, p50 {np.median(latency):.1f} ms, "
                      f"p95 {np.percentile(latency, 95):.1f} ms, max {latency.max():.1f} ms over {len(latency)} frames")
        if interrupted:
            err.print("[yellow]interrupted[/]")


async def microphone_loop(client: ChatClient, err: Console) -> None:
    """Microphone to the server, reply to the speakers, until Ctrl-C or the server closes.

    Args:
        client: a connected client.
        err: where to print status lines.
    """
    try:
        import sounddevice as sd
    except (ImportError, OSError) as e:
        raise click.ClickException(
            f"no --input file and no sound device support ({e}); install it with `pip install mimi-moshi[audio]`")
    import queue

    loop = asyncio.get_running_loop()
    out_q: queue.Queue[np.ndarray] = queue.Queue()
    buffer = np.zeros(0, dtype=np.float32)
    client.on_audio = out_q.put

    def on_input(data: np.ndarray, frames: int, time_: object, status: object) -> None:
        asyncio.run_coroutine_threadsafe(client.send_pcm(data[:, 0].copy()), loop)

    def on_output(data: np.ndarray, frames: int, time_: object, status: object) -> None:
        nonlocal buffer
        while len(buffer) < frames:
            try:
                buffer = np.concatenate([buffer, out_q.get_nowait()])
            except queue.Empty:
                break
        n = min(frames, len(buffer))
        data[:n, 0] = buffer[:n]
        data[n:, 0] = 0
        buffer = buffer[n:]

    with sd.InputStream(samplerate=SAMPLE_RATE, channels=1, blocksize=1920, dtype="float32", callback=on_input), \
            sd.OutputStream(samplerate=SAMPLE_RATE, channels=1, blocksize=1920, dtype="float32", callback=on_output):
        err.print("[green]talk now (Ctrl-C to stop)[/]")
        await client.closed_by_server.wait()


@click.command()
@click.option("--url", default=None, help="Server to talk to, e.g. ws://127.0.0.1:8998 (default: run --backend here).")
@click.option("--backend", type=click.Choice(["moshi", "echo", "remote"]), default=None,
              help="Run this backend in-process instead of connecting to --url.")
@click.option("--device", default="cpu", show_default=True, help="Torch device of an in-process backend.")
@model_file_options
@click.option("-i", "--input", "input_path", type=click.Path(exists=True, dir_okay=False),
              help="Speak this recording instead of the microphone.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Save the reply audio here (wav).")
@click.option("--fast", is_flag=True, help="Send --input as fast as the server takes it, not in real time.")
@click.option("-f", "--force", is_flag=True, help="Overwrite --output.")
@click.option("--insecure", is_flag=True, help="Accept a self-signed certificate on wss://.")
def chat(url: str | None, backend: str | None, device: str, hf_repo: str | None, mimi_weights: str | None,
         mimi_config: str | None, lm_weights: str | None, lm_config: str | None, tokenizer: str | None,
         remote_url: str | None, input_path: str | None, output: str | None, fast: bool, force: bool,
         insecure: bool) -> None:
    """Talk with a server: the reply is played (or saved with --output) and its text printed live."""
    import aiohttp

    from mimi_moshi_chat.backends import BackendOptions
    from mimi_moshi_chat.client import ServerError

    if url is not None and backend is not None:
        fail("give either --url (a running server) or --backend (run one here), not both")
    if url is None and backend is None:
        url = "ws://127.0.0.1:8998"
    if output is not None and Path(output).exists() and not force:
        fail(f"output {output} already exists (use --force to overwrite)")
    if fast and input_path is None:
        fail("--fast needs --input")
    options = BackendOptions(device=device, hf_repo=hf_repo, mimi_weights=mimi_weights, mimi_config=mimi_config,
                             lm_weights=lm_weights, lm_config=lm_config, tokenizer=tokenizer, remote_url=remote_url)
    try:
        asyncio.run(converse(url, backend, options, input_path, output, fast, force, insecure))
    except ServerError as e:
        fail(f"server refused the session: {e}")
    except (ConnectionError, asyncio.TimeoutError, aiohttp.ClientError) as e:
        fail(f"cannot talk to {url}: {e or type(e).__name__}")
