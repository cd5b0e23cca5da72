"""The real server (`moshi serve --backend echo`, tiny Mimi) on a free port, over real websockets."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import numpy as np
import pytest
from chatutil import MIMI, opus_roundtrip, serve, speech, wire_frames

from mimi_moshi_chat.client import ChatClient, ServerError, chat_url, stream_file
from mimi_moshi_chat.protocol import Kind, SamplingSettings, decode_message, encode_message

DELAY = 3


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory):
    with serve(["--backend", "echo", *MIMI, "--max-sessions", "2", "--echo-delay", str(DELAY)],
               tmp_path_factory.mktemp("echo")) as server:
        yield server


def run(coro):
    return asyncio.run(coro)


def wait_idle(server, timeout=10.0):
    deadline = time.monotonic() + timeout
    while server.status()["active_sessions"] and time.monotonic() < deadline:
        time.sleep(0.05)
    return server.status()["active_sessions"]


def test_handshake_and_metadata(echo_server):
    async def go():
        async with aiohttp.ClientSession() as http, http.ws_connect(chat_url(echo_server.url)) as ws:
            first = decode_message((await ws.receive_bytes(timeout=30)))
            second = decode_message((await ws.receive_bytes(timeout=30)))
            return first, second
    first, second = run(go())
    assert first.kind == Kind.HANDSHAKE and first.payload == b""
    assert second.kind == Kind.METADATA
    meta = __import__("json").loads(second.payload)
    assert meta["backend"] == "echo" and meta["sample_rate"] == 24000 and meta["frame_size"] == 1920


def test_speech_in_echo_out(echo_server):
    """The reply is as long as the input and equals what the echo must produce, sample for sample.

    Prediction: the server decodes exactly `wire_frames(pcm)` (Opus is deterministic), the echo
    returns the Mimi streaming round trip of those frames DELAY frames later, and the server
    Opus-encodes that frame by frame. Random-weight Mimi output is not speech-like, so a loose
    "sounds similar" check would prove little; this exact prediction does.
    """
    from test_chat_backends import reference_roundtrip

    pcm = speech(3.0)

    async def go():
        async with await ChatClient.connect(echo_server.url) as client:
            return await stream_file(client, pcm, realtime=False)
    conv = run(go())
    assert conv.reply.shape == pcm.shape and conv.errors == ()
    frames_in = wire_frames(pcm)
    reply_frames = np.concatenate([np.zeros((DELAY, 1920), np.float32), reference_roundtrip(frames_in)])
    expected = opus_roundtrip(reply_frames[:len(frames_in)])[:len(pcm)]
    err = np.abs(conv.reply - expected).max()
    print(f"echo reply vs prediction: max abs error {err:.2e}")
    assert err < 1e-4, err
    assert np.abs(conv.reply[DELAY * 1920:]).max() > 0.01
    assert np.abs(conv.reply[:DELAY * 1920 - 960]).max() < 1e-3  # silence before the echo starts


def test_sessions_up_to_max_then_busy(echo_server):
    async def go():
        a = await ChatClient.connect(echo_server.url)
        b = await ChatClient.connect(echo_server.url)
        try:
            busy_error = None
            try:
                await ChatClient.connect(echo_server.url, timeout=10)
            except ServerError as e:
                busy_error = str(e)
            # A raw connection sees the error message and then a clean close with code 1013.
            async with aiohttp.ClientSession() as http, http.ws_connect(chat_url(echo_server.url)) as ws:
                msg = decode_message(await ws.receive_bytes(timeout=10))
                closing = await ws.receive(timeout=10)
                close = (closing.type, ws.close_code)
            # Both admitted sessions work at the same time.
            pcm = speech(1.0)
            ca, cb = await asyncio.gather(stream_file(a, pcm, realtime=False), stream_file(b, pcm, realtime=False))
            return busy_error, msg, close, ca, cb
        finally:
            await a.close()
            await b.close()
    busy_error, msg, close, ca, cb = run(go())
    assert busy_error is not None and "server busy: all 2 sessions are in use" in busy_error
    assert msg.kind == Kind.ERROR and b"server busy" in msg.payload
    assert close == (aiohttp.WSMsgType.CLOSE, 1013)
    np.testing.assert_array_equal(ca.reply, cb.reply)  # same input, independent states, same echo
    assert np.abs(ca.reply).max() > 0.01
    assert wait_idle(echo_server) == 0
    # Freed slots admit new sessions again.
    async def again():
        async with await ChatClient.connect(echo_server.url) as c:
            return c.handshake
    assert run(again()) is not None


MALFORMED = [
    ("empty", lambda ws: ws.send_bytes(b""), "empty message"),
    ("unknown kind", lambda ws: ws.send_bytes(b"\x09hello"), "unknown message kind 0x09"),
    ("garbage audio", lambda ws: ws.send_bytes(b"\x01" + b"garbage" * 20), "bad audio message: not an Ogg page"),
    ("bad checksum", lambda ws: ws.send_bytes(b"\x01OggS" + bytes(60)), "bad audio message: Ogg page checksum"),
    ("text frame", lambda ws: ws.send_str("hello"), "text websocket message: expected binary"),
    ("client text kind", lambda ws: ws.send_bytes(b"\x02hi"), "unexpected message kind 0x02"),
    ("bad control", lambda ws: ws.send_bytes(b"\x03\x09"), "bad control message"),
]


@pytest.mark.parametrize("name, send, expect", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_messages_get_an_error_and_the_session_goes_on(echo_server, name, send, expect):
    async def go():
        async with await ChatClient.connect(echo_server.url) as client:
            await send(client.ws)
            deadline = time.monotonic() + 10
            while not client.received.errors and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            conv = await stream_file(client, speech(0.8), realtime=False)
            return list(client.received.errors), conv
    errors, conv = run(go())
    assert len(errors) == 1 and expect in errors[0], errors
    assert np.abs(conv.reply).max() > 0.01  # audio after the bad message is still echoed
    assert echo_server.proc.poll() is None


def test_bad_query_parameter_is_refused(echo_server):
    with pytest.raises(ServerError, match="text_topk='many' is not an integer"):
        run(ChatClient.connect(echo_server.url + "/api/chat?text_topk=many", timeout=10))


def test_ping_is_answered_with_its_payload(echo_server):
    async def go():
        async with await ChatClient.connect(echo_server.url) as client:
            await client.send_raw(encode_message(Kind.PING, b"t=123"))
            deadline = time.monotonic() + 10
            while not client.pongs and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            return client.pongs
    pongs = run(go())
    assert [p for p, _ in pongs] == [b"t=123"]


def test_vanished_client_frees_its_session(echo_server):
    async def go():
        client = await ChatClient.connect(echo_server.url)
        await client.send_pcm(speech(0.5)[:1920])
        await asyncio.sleep(0.2)
        assert echo_server.status()["active_sessions"] == 1
        # Drop the TCP connection without a websocket close frame.
        client.ws._response.connection.transport.abort()
        await client._http.close()
    run(go())
    assert wait_idle(echo_server) == 0
    assert "session" in echo_server.log() and "closed" in echo_server.log()


def test_restart_control_gives_fresh_state(echo_server):
    pcm = speech(1.6)  # 20 frames

    async def go():
        async with await ChatClient.connect(echo_server.url) as client:
            for k in range(10):
                await client.send_pcm(pcm[k * 1920:(k + 1) * 1920])
            assert await client.wait_for_samples(10 * 1920, timeout=30)
            await client.send_raw(b"\x03\x03")  # control: restart
            for k in range(10, 20):
                await client.send_pcm(pcm[k * 1920:(k + 1) * 1920])
            assert await client.wait_for_samples(20 * 1920, timeout=30)
            return client.received.audio().reshape(-1, 1920), client.received.errors
    frames, errors = run(go())
    level = np.abs(frames).max(axis=1)
    assert errors == []
    assert level[DELAY:10].min() > 0.01  # the echo was playing before the restart
    # After it, the new session's delay line starts silent again (the first frame after the
    # restart still carries the Opus decoder's ringing from the frame before).
    assert level[11:10 + DELAY].max() < 1e-2, level
    assert level[10 + DELAY:].min() > 0.01
    assert "control restart" in echo_server.log()


def test_sampling_settings_reach_the_session(echo_server):
    async def go():
        async with await ChatClient.connect(echo_server.url, SamplingSettings(text_temperature=0.3, audio_seed=5)) as c:
            await asyncio.sleep(0.1)
            return c.received.metadata
    meta = run(go())
    assert meta and meta[0]["settings"] == {"text_temperature": 0.3, "audio_seed": 5}


def test_fifty_sessions_without_growth(echo_server):
    pcm = speech(0.8)

    async def one():
        async with await ChatClient.connect(echo_server.url) as client:
            conv = await stream_file(client, pcm, realtime=False)
            assert np.abs(conv.reply).max() > 0.01

    async def many(n):
        for _ in range(n):
            await one()

    run(many(5))  # warm up: thread pool, allocator, lazy imports
    assert wait_idle(echo_server) == 0
    before = echo_server.resources()
    served_before = echo_server.status()["sessions_served"]
    run(many(50))
    assert wait_idle(echo_server) == 0
    # The last connection's socket closes asynchronously after its session ends: give it a
    # moment before counting, so one closing socket is not read as a leak (a real leak grows
    # by one per session, 50 here).
    deadline = time.monotonic() + 5.0
    after = echo_server.resources()
    while after["fds"] > before["fds"] and time.monotonic() < deadline:
        time.sleep(0.1)
        after = echo_server.resources()
    assert echo_server.status()["sessions_served"] == served_before + 50
    print(f"server resources before {before}, after 50 sessions {after}")
    assert after["fds"] <= before["fds"]
    assert after["threads"] <= before["threads"]
    assert after["rss_kib"] - before["rss_kib"] < 16 * 1024, (before, after)
