"""
Abuse on a real daphne: floods of each rate-limited frame type, too many
connections from one user, a client that sends as fast as it can (closed with
4408, the server's memory bounded), and connections that stall: a handshake
never finished and a WebSocket that stops answering pings.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import threading
import time
import uuid
from pathlib import Path

import pytest
import websockets

from chat.models import Room

from .conftest import SERVER_KINDS, ServerProcess, Ws

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]


@pytest.fixture
def people(make_user, token_for):
    alice, bob = make_user("alice"), make_user("bob")
    Room.objects.create(slug="general", name="General")
    return {"alice": token_for(alice), "bob": token_for(bob), "users": (alice, bob)}


async def round_trip(ws: Ws, room: str = "general") -> float:
    """Post and see one's own message come back; the seconds it took."""
    started = time.monotonic()
    cid = str(uuid.uuid4())
    ack = await ws.post(room, "still here", client_id=cid)
    assert ack["type"] == "ack", ack
    while True:
        (message,) = await ws.messages(room, 1, timeout=10)
        if message["client_id"] == cid:
            return time.monotonic() - started


# --- rate limits ------------------------------------------------------------------------

FLOODS = {
    "message": lambda i: {
        "type": "message",
        "room": "general",
        "content": f"spam {i}",
        "client_id": str(uuid.uuid4()),
    },
    "typing": lambda i: {"type": "typing", "room": "general", "is_typing": True},
    "join": lambda i: {"type": "join", "room": "general"},
}


@pytest.mark.parametrize("kind", FLOODS)
async def test_a_flood_is_rate_limited_while_another_users_round_trip_still_works(
    server, people, kind
):
    """60 frames at once, with production limits (20 messages / 10 s per room,
    typing 1 / s, 30 joins / 10 s per user): the excess is RATE_LIMITED, the
    flooder's connection stays usable, and bob's post comes back meanwhile."""
    a = await Ws.connect(server.ws, token=people["alice"])
    b = await Ws.connect(server.ws, token=people["bob"])
    await a.join("general")  # typing needs it; it is a join too
    await b.join("general")
    for i in range(60):
        await a.send({**FLOODS[kind](i), "ref": i})
    bobs_latency = await round_trip(b)
    frames = await a.quiet(1.5)
    replies = [f for f in frames if f.get("ref") in range(60)]
    refused = [f for f in replies if f["type"] == "error"]
    assert {f["code"] for f in refused} == {"RATE_LIMITED"}
    assert all(0 < f["retry_after"] <= 10 for f in refused)
    if kind == "message":
        assert (len(replies) - len(refused), len(refused)) == (20, 40)
    elif kind == "join":
        assert (len(replies) - len(refused), len(refused)) == (29, 31)
    else:
        assert len(refused) >= 55  # 1 per second: 1 or 2 went through
    assert bobs_latency < 5
    assert (await a.request({"type": "ping", "ref": "after"}, "pong"))["ref"] == "after"
    await a.close()
    await b.close()


async def test_a_users_connection_beyond_20_is_closed_with_4429_and_the_slot_comes_back(
    protocol_server, people
):
    conns = [await Ws.connect(protocol_server.ws, token=people["alice"]) for _ in range(20)]
    for ws in conns:
        assert (await ws.request({"type": "ping"}, "pong"))["type"] == "pong"
    extra = await Ws.connect(protocol_server.ws, token=people["alice"])
    with pytest.raises(websockets.exceptions.ConnectionClosed):
        await extra.recv(timeout=5)
    assert extra.conn.close_code == 4429
    assert extra.conn.close_reason == "policy: at most 20 connections"
    bob = await Ws.connect(protocol_server.ws, token=people["bob"])  # others are not affected
    assert (await bob.request({"type": "ping"}, "pong"))["type"] == "pong"

    await conns.pop().close()
    deadline = time.monotonic() + 10
    while True:  # the closed connection's slot is released as the server sees it go
        again = await Ws.connect(protocol_server.ws, token=people["alice"])
        try:
            assert (await again.request({"type": "ping"}, "pong"))["type"] == "pong"
            break
        except websockets.exceptions.ConnectionClosed:
            assert again.conn.close_code == 4429 and time.monotonic() < deadline
            await asyncio.sleep(0.1)
    for ws in [*conns, again, bob]:
        await ws.close()


# --- a client that sends as fast as it can ---------------------------------------------


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@pytest.fixture(params=SERVER_KINDS)
def flood_server(request, django_db_setup, redis_url):
    """A server of its own (daphne, then uvicorn), with production limits,
    whose memory is measured."""
    proc = ServerProcess(kind=request.param, redis_url=redis_url).start()
    yield proc
    proc.stop()


async def test_a_client_sending_as_fast_as_it_can_is_closed_with_4408_and_memory_stays_bounded(
    flood_server, people
):
    server = flood_server
    b = await Ws.connect(server.ws, token=people["bob"])
    await b.join("general")
    await round_trip(b)  # warm: every code path of a post has run once
    before = peak = rss_bytes(server.proc.pid)
    sampling = True

    async def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, rss_bytes(server.proc.pid))
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    # max_queue=None: the client library keeps reading (so it sees the close
    # frame); this test's code never does, it only sends.
    flooder = await websockets.connect(
        server.ws, additional_headers={"Authorization": f"Token {people['alice']}"}, max_queue=None
    )
    await flooder.send(json.dumps({"type": "join", "room": "general"}))
    frame = json.dumps({"type": "typing", "room": "general", "is_typing": True})
    sent, started = 0, time.monotonic()
    try:
        for _ in range(20_000):
            await flooder.send(frame)
            sent += 1
    except websockets.exceptions.ConnectionClosed:
        pass
    await asyncio.wait_for(flooder.wait_closed(), 10)
    flood_seconds = time.monotonic() - started
    bobs_latency = await round_trip(b)
    sampling = False
    await sampler
    growth = peak - before
    print(
        f"\nflood: {sent} frames sent in {flood_seconds:.2f} s before the close; "
        f"{server.kind} RSS {before / 2**20:.1f} MB -> peak {peak / 2**20:.1f} MB "
        f"(+{growth / 2**20:.1f} MB)"
    )
    assert flooder.close_code == 4408
    assert flooder.close_reason == "policy: too many requests"
    assert growth < 150 * 2**20
    assert bobs_latency < 5
    assert (await b.request({"type": "ping"}, "pong"))["type"] == "pong"
    await b.close()


# --- connections that stall (daphne's own timeouts; about a minute) ----------------------


def raw_upgrade(port: int, token: str) -> socket.socket:
    """A WebSocket handshake over a plain socket: a client with no library
    behind it to answer pings."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            "GET /ws/ HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Token {token}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, "closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def masked_text(text: str) -> bytes:
    payload = text.encode()
    mask = os.urandom(4)
    assert len(payload) < 126
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + body


def read_until_closed(sock: socket.socket, limit: float) -> tuple[float, list[int]]:
    """Read (never answering) until the server closes; the time it took and the
    opcodes of the frames seen (0x9: a ping)."""
    sock.settimeout(1.0)
    started, buffer, opcodes = time.monotonic(), b"", []
    while time.monotonic() - started < limit:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        buffer += chunk
        while len(buffer) >= 2:
            length = buffer[1] & 0x7F
            offset = 2
            if length == 126:
                length, offset = struct.unpack(">H", buffer[2:4])[0], 4
            elif length == 127:
                length, offset = struct.unpack(">Q", buffer[2:10])[0], 10
            if len(buffer) < offset + length:
                break
            opcodes.append(buffer[0] & 0x0F)
            buffer = buffer[offset + length :]
    return time.monotonic() - started, opcodes


@pytest.mark.slow
async def test_a_stalled_handshake_and_a_websocket_that_stops_answering_pings_are_closed(
    server, people
):
    """daphne's defaults, as production runs it: a connection that never
    finishes its HTTP request is closed after 60 s of silence (Twisted's
    request timeout); an open WebSocket whose client stops answering is closed
    when a ping (every 20 s of silence) goes 30 s without a pong, and its user
    leaves the room's presence."""
    b = await Ws.connect(server.ws, token=people["bob"])
    await b.join("general")

    half_line = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    half_line.sendall(b"GET /ws/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgr")
    silent = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    mute = raw_upgrade(server.port, people["alice"])
    mute.sendall(masked_text(json.dumps({"type": "join", "room": "general"})))
    joined = await b.recv_type("presence", timeout=10)
    assert [j["user"]["username"] for j in joined["joins"]] == ["alice"]

    def closed_within(sock: socket.socket) -> tuple[float, list[int]]:
        with sock:
            return read_until_closed(sock, limit=80)

    results = {}

    def watch(name: str, sock: socket.socket) -> None:
        results[name] = closed_within(sock)

    threads = [
        threading.Thread(target=watch, args=(name, sock), daemon=True)
        for name, sock in [("half line", half_line), ("silent", silent), ("mute", mute)]
    ]
    for thread in threads:
        thread.start()
    left = await b.recv_type("presence", timeout=80)
    assert [lv["user"]["username"] for lv in left["leaves"]] == ["alice"]
    for thread in threads:
        await asyncio.to_thread(thread.join, 85)
    print(
        "\nstalled connections closed after (s):", {k: round(v[0], 1) for k, v in results.items()}
    )
    assert results["half line"][0] < 70 and results["silent"][0] < 70
    seconds, opcodes = results["mute"]
    assert 0x9 in opcodes  # the server pinged, and got no pong
    assert seconds < 60  # 20 s to the ping, 30 s to give up, checked every 2 s
    assert (await b.request({"type": "ping"}, "pong"))["type"] == "pong"
    await b.close()
