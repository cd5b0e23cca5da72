"""The web page in headless Chromium with a fake microphone playing a real recording.

Needs the Debian `chromium` package and the `playwright` Python package (its own browser
download is not used); skipped with the reason when either is missing. Set
MOSHI_CHAT_SCREENSHOT=PATH to keep the page's screenshot (docs/chat_page.png is made so).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import soundfile as sf
from chatutil import LM, MIMI, serve, speech

CHROMIUM = os.environ.get("MOSHI_CHROMIUM", "/usr/bin/chromium")


def launch(p, wav: Path, extra: tuple[str, ...] = ()):
    return p.chromium.launch(executable_path=CHROMIUM, args=[
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}", "--no-sandbox", "--headless", "--disable-gpu",
        "--disable-background-networking", "--autoplay-policy=no-user-gesture-required", *extra])


@pytest.fixture(scope="module")
def browser_env(tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set MOSHI_CHROMIUM)")
    wav = tmp_path_factory.mktemp("mic") / "mic.wav"
    sf.write(wav, speech(), 24000, subtype="PCM_16")  # Chromium loops it as the microphone
    return sync_api, wav


def talk(sync_api, wav, url, until, screenshot=None, timeout_ms=90000, extra=()):
    """Open the page, switch the mic on, wait for the JS condition `until` on `moshiStats` (s), mic off."""
    with sync_api.sync_playwright() as p:
        browser = launch(p, wav, extra)
        try:
            page = browser.new_page()
            problems = []
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(url)
            assert page.title() == "moshi chat"
            assert page.text_content("#state") == "disconnected"
            page.click("#connect")
            page.wait_for_function("window.moshiStats.state === 'connected'", timeout=60000)
            page.wait_for_function(f"(s => {until})(window.moshiStats)", timeout=timeout_ms)
            stats = page.evaluate("window.moshiStats")
            texts = {k: page.text_content(f"#{k}") for k in ("state", "latency", "rtt", "text", "backend", "audio")}
            if screenshot:
                page.screenshot(path=str(screenshot))
            page.click("#connect")  # mic off: the page closes the session
            page.wait_for_function("window.moshiStats.state === 'disconnected'", timeout=10000)
            return stats, texts, problems
        finally:
            browser.close()


def test_page_talks_with_the_tiny_moshi(browser_env, tmp_path):
    sync_api, wav = browser_env
    shot = Path(os.environ.get("MOSHI_CHAT_SCREENSHOT", tmp_path / "chat_page.png"))
    with serve(["--backend", "moshi", *MIMI, *LM], tmp_path) as server:
        stats, texts, problems = talk(sync_api, wav, f"http://127.0.0.1:{server.port}/",
                                      "s.receivedSamples > 4 * s.sampleRate && s.text.length > 20", screenshot=shot)
        deadline = time.monotonic() + 10
        while server.status()["active_sessions"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.status()["active_sessions"] == 0  # mic off freed the session
        log = server.log()
    print(f"browser stats: {stats}")
    assert problems == [] and stats["errors"] == []
    assert stats["sampleRate"] in (24000, 48000) and stats["backend"] == "moshi"
    # Microphone audio went out as Opus pages the server accepted without an error ...
    assert stats["sentSamples"] > 4 * stats["sampleRate"]
    assert "frames in" in log and "errors 0" in log
    # ... and reply audio (not silence) and text came back while it was sending.
    assert stats["receivedSamples"] > 4 * stats["sampleRate"]
    assert stats["replyEnergy"] > 0
    assert len(stats["text"].strip()) > 10 and texts["text"].startswith(stats["text"])  # shown on the page
    assert stats["latencyMs"] is not None and 0 < stats["latencyMs"] < 5000
    assert stats["rttMs"] is not None and texts["rtt"].endswith("ms")
    assert texts["backend"] == "moshi backend"
    assert shot.stat().st_size > 10_000


def test_page_with_echo_backend_returns_the_voice(browser_env, tmp_path):
    sync_api, wav = browser_env
    with serve(["--backend", "echo", *MIMI, "--echo-delay", "2"], tmp_path) as server:
        stats, texts, problems = talk(sync_api, wav, f"http://127.0.0.1:{server.port}/",
                                      "s.receivedSamples > 3 * s.sampleRate")
    assert problems == [] and stats["errors"] == [] and stats["backend"] == "echo"
    assert stats["text"] == ""  # the echo says nothing
    # Full duplex: the voice comes back while the microphone is still sending.
    assert stats["sentSamples"] >= stats["receivedSamples"] > 3 * stats["sampleRate"]
    assert stats["replyEnergy"] > 1.0


def test_page_over_https(browser_env, tmp_path):
    sync_api, wav = browser_env
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed (apt-get install openssl)")
    certs = tmp_path / "certs"
    certs.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(certs / "key.pem"),
                    "-out", str(certs / "cert.pem"), "-days", "1", "-subj", "/CN=127.0.0.1"], check=True,
                   capture_output=True)
    with serve(["--backend", "echo", *MIMI, "--echo-delay", "2", "--ssl", str(certs)], tmp_path,
               scheme="https") as server:
        # A secure page (https, wss) gets the microphone from any host, not only localhost.
        stats, texts, problems = talk(sync_api, wav, f"https://127.0.0.1:{server.port}/",
                                      "s.receivedSamples > 2 * s.sampleRate", extra=("--ignore-certificate-errors",))
    assert problems == [] and stats["errors"] == [] and stats["backend"] == "echo"
    assert stats["replyEnergy"] > 1.0
