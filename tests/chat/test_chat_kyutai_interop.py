"""Interoperability with kyutai's own Python server (moshi 0.2.13) running the tiny fixtures.

Our client (and our server's remote backend) talk to kyutai's `moshi.server`: its lone-byte
handshake, its Ogg/Opus and its text messages. Needs kyutai's package in a separate Python
(the interpreter named by MOSHI_REFERENCE_PYTHON); skipped when that is unset. Kyutai's
server is CPU-hostile (bf16, a CUDA sync in its warm-up, patched out here), hence `slow`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from chatutil import FIXTURES, free_port, serve, speech

from mimi_moshi_chat.client import ChatClient, stream_file

_REFERENCE = os.environ.get("MOSHI_REFERENCE_PYTHON", "")
REFERENCE_PYTHON = Path(_REFERENCE) if _REFERENCE else None

LAUNCH = """
import runpy, sys, torch
torch.cuda.synchronize = lambda *a, **k: None  # its warm-up syncs CUDA unconditionally
sys.argv = ["moshi.server"] + sys.argv[1:]
runpy.run_module("moshi.server", run_name="__main__")
"""


@pytest.fixture(scope="module")
def kyutai_server(tmp_path_factory):
    if REFERENCE_PYTHON is None or not REFERENCE_PYTHON.exists():
        pytest.skip(f"set MOSHI_REFERENCE_PYTHON to a Python with kyutai's moshi package (now: {_REFERENCE or 'unset'})")
    probe = subprocess.run([str(REFERENCE_PYTHON), "-c", "import moshi.server"], capture_output=True, text=True)
    if probe.returncode != 0 and "No module named" in probe.stderr:
        pytest.skip(f"{REFERENCE_PYTHON} has no moshi package")
    tmp = tmp_path_factory.mktemp("kyutai")
    config = json.loads((FIXTURES / "moshi_tiny.json").read_text())
    config["mimi_config_name"] = "file://" + str(FIXTURES / "mimi_tiny.json")
    (tmp / "config.json").write_text(json.dumps(config))
    port = free_port()
    log_path = tmp / "kyutai.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [str(REFERENCE_PYTHON), "-c", LAUNCH, "--host", "127.0.0.1", "--port", str(port), "--static", "none",
             "--device", "cpu", "--config-path", str(tmp / "config.json"),
             "--moshi-weight", str(FIXTURES / "moshi_tiny.safetensors"),
             "--mimi-weight", str(FIXTURES / "mimi_tiny.safetensors"),
             "--tokenizer", str(FIXTURES / "tokenizer_tiny.model")], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                pytest.fail(f"kyutai's server exited:\n{log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert time.monotonic() < deadline, log_path.read_text()[-2000:]
            time.sleep(0.5)
        yield f"ws://127.0.0.1:{port}", tmp
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.slow
def test_our_client_talks_to_kyutai_server(kyutai_server):
    url, _ = kyutai_server

    async def go():
        async with await ChatClient.connect(url, timeout=120) as client:
            conv = await stream_file(client, speech(1.0), realtime=False, timeout=120)
            return conv, client.handshake, client.received
    conv, handshake, received = asyncio.run(go())
    assert handshake is not None and handshake.version is None  # the Python server's lone 0x00
    assert conv.errors == () and len(conv.reply) == 24000
    assert received.samples >= 24000 and np.abs(conv.reply).max() > 0
    assert received.text and all("\u2581" not in p for p in received.text)


@pytest.mark.slow
def test_remote_backend_relays_to_kyutai_server(kyutai_server):
    url, tmp = kyutai_server
    with serve(["--backend", "remote", "--remote-url", url], tmp) as relay:
        async def go():
            async with await ChatClient.connect(relay.url, timeout=120) as client:
                return await stream_file(client, speech(1.0), realtime=False, timeout=120), client.received
        conv, received = asyncio.run(go())
    assert conv.errors == () and len(conv.reply) == 24000 and np.abs(conv.reply).max() > 0
    assert received.text  # kyutai's text pieces pass through the relay


def test_kyutai_client_talks_to_our_server(tmp_path):
    """Kyutai's terminal client (`python -m moshi.client`), with a fake sound device, on our echo server."""
    if REFERENCE_PYTHON is None or not REFERENCE_PYTHON.exists():
        pytest.skip(f"set MOSHI_REFERENCE_PYTHON to a Python with kyutai's moshi package (now: {_REFERENCE or 'unset'})")
    from chatutil import MIMI
    from test_chat_cli import run_with_fake_audio

    with serve(["--backend", "echo", *MIMI, "--echo-delay", "2"], tmp_path) as server:
        code, out, err, played = run_with_fake_audio(
            [str(REFERENCE_PYTHON), "-m", "moshi.client", "--host", "127.0.0.1", "--port", str(server.port)],
            tmp_path, 2.0)
        deadline = time.monotonic() + 20
        while server.status()["active_sessions"] and time.monotonic() < deadline:
            time.sleep(0.1)
        log = server.log()
    assert played is not None and np.count_nonzero(np.abs(played) > 1e-3) > 24000, (out, err)
    # (Their client prints "Lost connection" after Ctrl-C: its sound callbacks keep sending while
    # the websocket closes. That is their shutdown, not a failure of the session.)
    summary = [line for line in log.splitlines() if "closed;" in line][-1]
    print(summary)
    assert "errors 0" in summary and "frames in 0 " not in summary, summary
