"""
Bounded output (WS_MAX_PENDING_OUTPUT_BYTES) over real sockets, under daphne
(the bound is in its transport) and uvicorn (whose send waits while a socket
is full: the consumer holds that connection's frames instead, so nobody
else waits): clients that stop reading in a busy room are closed with 4413
once their output passes the cap, the server's memory stays flat, the
members who read get every message, and each stalled client, resuming with
`since`, gets every message it missed once and in order.
"""

import asyncio
import json
import re
import secrets
import socket
import uuid

import httpx
import pytest
import websockets

from chat.models import Room

from .conftest import METRICS_HEADERS, SERVER_KINDS, SMALL_RCVBUF, Ws, slow_client

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

STALLED = 10
MESSAGES = 600
SIZE = 15000  # characters (ASCII): 9 MB of output per member in all
CAP = 256 * 1024  # the default


@pytest.fixture
def people(make_user, token_for):
    Room.objects.create(slug="general", name="General")
    return {name: token_for(make_user(name)) for name in ("alice", "bob", "carol")}


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(r"VmRSS:\s+(\d+)", status.read()).group(1))


async def stalled_client(server, token: str) -> websockets.ClientConnection:
    """A client that joins the room, then reads nothing."""
    conn = await slow_client(server, token)
    await conn.send(json.dumps({"type": "join", "room": "general"}))
    return conn


async def read_until_closed(conn) -> tuple[list[int], int | None]:
    """The seqs of the message frames a stalled client finally reads, and its close code."""
    seqs: list[int] = []
    try:
        while True:
            try:
                raw = await asyncio.wait_for(conn.recv(), 20)
            except TimeoutError:
                raise AssertionError(f"no close after {len(seqs)} messages") from None
            frame = json.loads(raw)
            if frame["type"] == "message":
                seqs.append(frame["seq"])
    except websockets.ConnectionClosed as closed:
        return seqs, closed.rcvd.code if closed.rcvd else None


@pytest.mark.parametrize("kind", SERVER_KINDS)
async def test_readers_that_stop_are_closed_past_the_cap_and_resume_with_nothing_lost(
    daphnes, redis_server, people, kind
):
    server = daphnes(
        kind=kind,
        redis_url=redis_server.url,
        env={
            "WS_MAX_PENDING_OUTPUT_BYTES": str(CAP),
            "CHAT_MESSAGE_RATE": "off",
            "CHAT_MAX_CONTENT_CHARS": str(SIZE),
            "CHAT_RESUME_MAX_MESSAGES": str(MESSAGES),
            "WS_MAX_CONNECTIONS_PER_USER": "0",
        },
    )
    alice = await Ws.connect(server.ws, token=people["alice"])
    reader = await Ws.connect(server.ws, token=people["bob"])
    for ws in (alice, reader):
        await ws.join("general")
    stalled = [await stalled_client(server, people["carol"]) for _ in range(STALLED)]
    await asyncio.sleep(0.5)  # their joins are in
    before = rss_kib(server.proc.pid)

    async def post_all() -> None:
        for n in range(MESSAGES):
            await alice.send(
                {
                    "type": "message",
                    "room": "general",
                    # Random: uvicorn compresses frames (permessage-deflate).
                    "content": f"{n:05d}" + secrets.token_urlsafe(SIZE)[: SIZE - 5],
                    "client_id": str(uuid.uuid4()),
                }
            )
            # alice reads as she posts (her own messages come back to her too):
            # a poster that did not would be a stalled reader itself.
            await alice.recv_type("ack", timeout=30)
            alice.backlog.clear()

    posting = asyncio.create_task(post_all())
    got = await reader.messages("general", MESSAGES, timeout=60)
    await posting
    after = rss_kib(server.proc.pid)
    assert [m["seq"] for m in got] == list(range(1, MESSAGES + 1))

    growth_mb = (after - before) / 1024
    # Unbounded, the stalled readers alone would hold 10 x 9 MB.
    assert growth_mb < 25, f"server RSS grew by {growth_mb:.1f} MB"

    for conn in stalled:
        seqs, code = await read_until_closed(conn)
        assert code == 4413, (code, len(seqs))
        assert seqs == list(range(1, len(seqs) + 1))  # in order, once, no gap
        assert len(seqs) < MESSAGES
        again = await Ws.connect(server.ws, token=people["carol"])
        joined = await again.join("general", since=seqs[-1] if seqs else 0)
        assert joined["type"] == "joined" and not joined["truncated"]
        rest = await again.messages("general", MESSAGES - len(seqs), timeout=30)
        assert [m["seq"] for m in rest] == list(range(len(seqs) + 1, MESSAGES + 1))
        assert await again.quiet(0.2) == []
        await again.close()

    async with httpx.AsyncClient(timeout=10) as client:
        metrics = (await client.get(f"{server.http}/metrics", headers=METRICS_HEADERS)).text
    overflows = re.search(r"^realtime_output_overflows_total (\S+)", metrics, re.M)
    assert overflows and float(overflows.group(1)) == STALLED  # the readers kept up
    assert (await alice.request({"type": "ping"}, "pong"))["type"] == "pong"
    assert (await reader.request({"type": "ping"}, "pong"))["type"] == "pong"
    print(f"\n{kind}: RSS {before / 1024:.0f} -> {after / 1024:.0f} MB ({growth_mb:+.1f} MB)")
    await alice.close()
    await reader.close()


async def test_an_sse_reader_that_stops_is_ended_past_the_cap_and_resumes(
    daphnes, redis_server, people
):
    """A room's SSE stream whose client stopped reading (daphne, whose HTTP
    send never waits: uvicorn's waits for the socket, which bounds it) ends
    once more than the cap waits for it; the server's memory stays flat and
    the client, reading again and resuming by Last-Event-ID, misses nothing."""
    server = daphnes(
        redis_url=redis_server.url,
        env={
            "WS_MAX_PENDING_OUTPUT_BYTES": str(CAP),
            "CHAT_MESSAGE_RATE": "off",
            "CHAT_MAX_CONTENT_CHARS": str(SIZE),
        },
    )
    alice = await Ws.connect(server.ws, token=people["alice"])
    await alice.join("general")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_RCVBUF)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(
        (
            "GET /events/rooms/general/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Token {people['carol']}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
    )
    await asyncio.sleep(0.5)
    before = rss_kib(server.proc.pid)
    for n in range(MESSAGES):
        await alice.send(
            {
                "type": "message",
                "room": "general",
                "content": f"{n:05d}" + "x" * (SIZE - 5),
                "client_id": str(uuid.uuid4()),
            }
        )
        await alice.recv_type("ack", timeout=30)
        alice.backlog.clear()
    await asyncio.sleep(1)
    growth_mb = (rss_kib(server.proc.pid) - before) / 1024
    assert growth_mb < 25, f"server RSS grew by {growth_mb:.1f} MB"
    # The client reads again: what was sent, then the end of the response.
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    raw = b""
    while not raw.endswith(b"0\r\n\r\n"):
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), 20)
        if not chunk:
            break
        raw += chunk
    sock.close()
    seqs = [int(s) for s in re.findall(rb"\nid: (\d+)\n", raw)]
    assert seqs and seqs == list(range(seqs[0], seqs[-1] + 1)) and seqs[-1] < MESSAGES
    headers = {"Authorization": f"Token {people['carol']}", "Last-Event-ID": str(seqs[-1])}
    rest: list[int] = []
    async with httpx.AsyncClient(base_url=server.http, timeout=30) as client:
        async with client.stream("GET", "/events/rooms/general/", headers=headers) as stream:
            async for line in stream.aiter_lines():
                if line.startswith("id: "):
                    rest.append(int(line[4:]))
                    if rest[-1] == MESSAGES:
                        break
        metrics = (await client.get("/metrics", headers=METRICS_HEADERS)).text
    assert rest == list(range(seqs[-1] + 1, MESSAGES + 1))
    overflows = re.search(r"^realtime_output_overflows_total (\S+)", metrics, re.M)
    assert overflows and float(overflows.group(1)) == 1
    print(f"\nSSE on daphne: RSS {growth_mb:+.1f} MB; the stalled stream got {len(seqs)} events")
    await alice.close()


class RssPeak:
    """The server's highest RSS while it runs, sampled every 20 ms."""

    def __init__(self, pid: int):
        self.pid, self.peak = pid, rss_kib(pid)
        self.task = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss_kib(self.pid))
            await asyncio.sleep(0.02)

    def stop(self) -> int:
        self.task.cancel()
        return self.peak


async def slow_resume(server, token: str, *, since: int, read: int | None = None):
    """Reconnect with a small receive buffer and join with `since`; read
    `read` messages (None: every one after `since` until quiet), a frame at
    a time with a pause, as a phone on a slow link would."""
    conn = await slow_client(server, token)
    await conn.send(json.dumps({"type": "join", "room": "general", "since": since}))
    joined = json.loads(await asyncio.wait_for(conn.recv(), 10))
    seqs: list[int] = []
    while read is None or len(seqs) < read:
        try:
            frame = json.loads(await asyncio.wait_for(conn.recv(), 2 if read is None else 20))
        except TimeoutError:
            break
        if frame["type"] == "message":
            seqs.append(frame["seq"])
            await asyncio.sleep(0.001)
    return conn, joined, seqs


@pytest.mark.parametrize("kind", SERVER_KINDS)
async def test_resumes_at_once_are_replayed_as_their_sockets_take_them(
    daphnes, redis_server, people, kind
):
    """Ten clients resume a 9 MB gap at once (90 MB that a replay written all
    at once would hold in the server): each gets every message once, in
    order, while the server holds a page and a socket's low water mark per
    client; one that stops reading halfway is closed with 4413 once it has
    taken nothing for WS_REPLAY_STALL_SECONDS."""
    server = daphnes(
        kind=kind,
        redis_url=redis_server.url,
        env={
            "CHAT_MESSAGE_RATE": "off",
            "CHAT_MAX_CONTENT_CHARS": str(SIZE),
            "CHAT_RESUME_MAX_MESSAGES": str(MESSAGES),
            "WS_MAX_CONNECTIONS_PER_USER": "0",
            "WS_REPLAY_STALL_SECONDS": "2",
        },
    )
    alice = await Ws.connect(server.ws, token=people["alice"])
    await alice.join("general")
    for n in range(MESSAGES):
        await alice.send(
            {
                "type": "message",
                "room": "general",
                "content": f"{n:05d}" + secrets.token_urlsafe(SIZE)[: SIZE - 5],
                "client_id": str(uuid.uuid4()),
            }
        )
        await alice.recv_type("ack", timeout=30)
        alice.backlog.clear()
    await asyncio.sleep(0.5)
    peak = RssPeak(server.proc.pid)
    before = peak.peak

    stopper_conn, stopper_joined, stopper_read = await slow_resume(
        server, people["carol"], since=0, read=20
    )
    resumed = await asyncio.gather(
        *(slow_resume(server, people["bob"], since=0) for _ in range(STALLED))
    )
    growth_mb = (peak.stop() - before) / 1024
    for conn, joined, seqs in resumed:
        assert joined["type"] == "joined" and not joined["truncated"]
        assert seqs == list(range(1, MESSAGES + 1))
        await conn.close()
    assert growth_mb < 25, f"server RSS grew by {growth_mb:.1f} MB during the replays"

    # The client that stopped reading after 20 was closed; it had what it read, in order.
    assert stopper_read == list(range(1, 21))
    seqs, code = await read_until_closed(stopper_conn)
    assert code == 4413
    assert stopper_read + seqs == list(range(1, len(seqs) + 21))
    assert len(seqs) + 20 < MESSAGES
    assert (await alice.request({"type": "ping"}, "pong"))["type"] == "pong"
    print(f"\n{kind}: {STALLED} replays of {MESSAGES} x {SIZE} B at once: RSS {growth_mb:+.1f} MB")
    await alice.close()
