"""`moshi serve` + `moshi chat` as subprocesses; the moshi (tiny LM) and remote backends; https."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from chatutil import DATA, LM, MIMI, moshi_exe, serve, speech

from mimi_moshi_chat.client import ChatClient, stream_file


def chat(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(moshi_exe() + ["chat", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory):
    with serve(["--backend", "echo", *MIMI, "--max-sessions", "2"], tmp_path_factory.mktemp("cli")) as server:
        yield server


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "realtime"])
def test_chat_file_against_echo_server(echo_server, tmp_path, fast):
    src = tmp_path / "speech.wav"
    pcm = speech(2.0 if not fast else None)
    sf.write(src, pcm, 24000)
    out = tmp_path / "reply.wav"
    r = chat("--url", echo_server.url, "--input", str(src), "--output", str(out), *(["--fast"] if fast else []))
    assert r.returncode == 0, r.stderr
    reply, rate = sf.read(out, dtype="float32")
    assert rate == 24000 and len(reply) == len(pcm)  # the reply is as long as the input
    assert np.abs(reply[12 * 1920:]).max() > 0.01  # the echo starts after the default 12-frame delay
    assert "saved" in r.stderr and "latency per frame" in r.stderr
    assert not list(tmp_path.glob(".reply.wav.*"))  # written atomically, no temp left


def test_chat_refuses_to_overwrite_and_reports_a_dead_server(tmp_path):
    out = tmp_path / "reply.wav"
    out.write_bytes(b"keep")
    r = chat("--url", "ws://127.0.0.1:9", "--input", str(DATA / "p240_00000.mp3"), "--output", str(out))
    assert r.returncode == 2 and "already exists" in r.stderr and out.read_bytes() == b"keep"
    r = chat("--url", "ws://127.0.0.1:9", "--input", str(DATA / "p240_00000.mp3"))
    assert r.returncode == 2 and "error:" in r.stderr and "Traceback" not in r.stderr


def test_chat_with_in_process_echo_backend(tmp_path):
    out = tmp_path / "reply.wav"
    r = chat("--backend", "echo", *MIMI, "--input", str(DATA / "metavoice_audio.wav"), "--output", str(out), "--fast")
    assert r.returncode == 0, r.stderr
    info = sf.info(DATA / "metavoice_audio.wav")
    assert abs(sf.info(out).frames - round(info.frames * 24000 / info.samplerate)) <= 1


def test_moshi_backend_sends_text_frames(tmp_path):
    with serve(["--backend", "moshi", *MIMI, *LM], tmp_path) as server:
        async def go():
            async with await ChatClient.connect(server.url + "/api/chat?text_seed=3&audio_seed=3") as client:
                return await stream_file(client, speech(1.2), realtime=False), client.received
        conv, received = asyncio.run(go())
    assert conv.errors == ()
    assert received.text, "no text frames from the tiny LM"
    assert all(isinstance(p, str) and "\u2581" not in p for p in received.text)
    assert len(conv.reply) == len(speech(1.2)) and np.abs(conv.reply).max() > 0.0
    assert received.metadata[0]["backend"] == "moshi"


def test_remote_backend_relays_to_another_server(echo_server, tmp_path):
    pcm = speech(2.0)

    async def talk(url):
        async with await ChatClient.connect(url) as client:
            return await stream_file(client, pcm, realtime=False)

    direct = asyncio.run(talk(echo_server.url))
    with serve(["--backend", "remote", "--remote-url", echo_server.url], tmp_path) as relay:
        relayed = asyncio.run(talk(relay.url))
        assert "remote backend" in relay.log()
    assert relayed.errors == () and len(relayed.reply) == len(pcm)
    # The relay re-encodes Opus once more, and random-weight Mimi reacts chaotically to that, so the
    # waveforms differ; the loudness envelope per frame still follows the direct echo closely.
    def envelope(x):
        return np.sqrt((x[: len(x) // 1920 * 1920].reshape(-1, 1920) ** 2).mean(axis=1))
    corr = np.corrcoef(envelope(direct.reply)[12:], envelope(relayed.reply)[12:])[0, 1]
    print(f"relay vs direct envelope correlation {corr:.3f}")
    assert corr > 0.8


def test_https_with_ssl_dir(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed (apt-get install openssl)")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                        str(cert), "-days", "1", "-subj", "/CN=localhost"], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"openssl could not make a certificate: {r.stderr[-200:]!r}")
    with serve(["--backend", "echo", *MIMI, "--ssl", str(tmp_path)], tmp_path, scheme="https") as server:
        async def go():
            async with await ChatClient.connect(server.url, ssl=False) as client:
                return await stream_file(client, speech(0.8), realtime=False)
        conv = asyncio.run(go())
        assert "https://127.0.0.1" in server.log()
    assert conv.errors == () and np.abs(conv.reply).max() > 0.0


def test_serve_ssl_dir_without_files(tmp_path):
    r = subprocess.run(moshi_exe() + ["serve", "--backend", "echo", *MIMI, "--ssl", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "has no cert.pem" in r.stderr


def test_chat_ctrl_c_saves_what_was_received(echo_server, tmp_path):
    import signal
    import time

    out = tmp_path / "partial.wav"
    proc = subprocess.Popen(moshi_exe() + ["chat", "--url", echo_server.url, "--input", str(DATA / "bria.mp3"),
                                           "--output", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    lines = []
    while not any("streaming" in line for line in lines):  # the CLI is connected and sending
        line = proc.stderr.readline()
        assert line, "moshi chat ended early: " + "".join(lines)
        lines.append(line)
    time.sleep(5)  # bria.mp3 is 45 s long: interrupt it in the middle, streaming in real time
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    err = "".join(lines) + err
    assert proc.returncode == 0, err
    assert "interrupted" in err and "Traceback" not in err
    frames = sf.info(out).frames
    assert 0 < frames < 15 * 24000  # the reply received in ~5 s, not the whole 45 s
    assert f"saved {frames / 24000:.2f} s of reply" in err


FAKE_SD = Path(__file__).parent / "fake_sounddevice"


def run_with_fake_audio(cmd, tmp_path, seconds, extra_env=None):
    """Run a microphone client with the fake sounddevice until its speakers played `seconds` of
    non-silent audio (at most 90 s), then Ctrl-C it."""
    import os
    import signal
    import time

    mic, speaker = tmp_path / "mic.npy", tmp_path / "speaker.npy"
    np.save(mic, speech(3.0))
    env = dict(os.environ, PYTHONPATH=f"{FAKE_SD}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               FAKE_SD_INPUT=str(mic), FAKE_SD_OUTPUT=str(speaker), **(extra_env or {}))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 90
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        with contextlib.suppress(OSError, ValueError, EOFError):
            played = np.load(speaker)
            if np.count_nonzero(np.abs(played) > 1e-3) > seconds * 24000 * 0.5:
                break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out, err, (np.load(speaker) if speaker.exists() else None)


def test_chat_microphone_and_speakers(echo_server, tmp_path):
    out = tmp_path / "reply.wav"
    code, _, err, played = run_with_fake_audio(
        moshi_exe() + ["chat", "--url", echo_server.url, "--output", str(out)], tmp_path, 2.0)
    assert code == 0, err
    assert "talk now" in err and "interrupted" in err
    reply, _ = sf.read(out, dtype="float32")
    assert len(reply) > 24000 and np.abs(reply[12 * 1920:]).max() > 0.01  # the echo came back ...
    assert played is not None and np.abs(played).max() > 0.01  # ... and was played
    # What the speakers played is the received reply, in order (after leading silence).
    start = int(np.argmax(np.abs(played) > 0))
    n = min(len(played) - start, len(reply) - 12 * 1920, 24000)
    first = int(np.argmax(np.abs(reply) > 0))
    np.testing.assert_array_equal(played[start:start + n], reply[first:first + n])
