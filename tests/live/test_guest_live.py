"""
A guest in the site (contract §0), over real sockets: one daphne serving
tests/guest_site/asgi.py, a site with a WebSocket consumer, ASGI middleware
and HTTP views of its own, and the package's websocket_application routed
beside them.

- The site's own consumer keeps stock daphne: 26 MB to a reader that pauses
  for 4 s arrive intact and in order, while the package's own sockets in the
  same process are still closed with 4413 at their output bound.
- The site's middleware, which wraps `send`, sees every frame the package sends.
- The site's HTTP responses are written by Twisted's own write, and the
  process's garbage collector is left as it was (the site did not opt in).
"""

import asyncio
import json
import uuid

import httpx
import pytest
import websockets

from chat.models import Room
from tests.guest_site import (
    BIG_CHUNKS,
    STREAM_FRAMES,
    big_chunk,
    stream_frame,
)

from .conftest import ServerProcess, Ws, slow_client

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

CAP = 64 * 1024  # the package's output bound in this site
SIZE = 60_000  # characters per message
MESSAGES = 150  # 9 MB to each member: far past what the kernel's buffers take


class GuestSite(ServerProcess):
    """daphne serving the guest site instead of the demo."""

    def command(self) -> list[str]:
        app = "project.asgi:application"
        return [
            "tests.guest_site.asgi:application" if part == app else part
            for part in super().command()
        ]


@pytest.fixture(scope="module")
def guest(django_db_setup, redis_url):
    proc = GuestSite(
        redis_url=redis_url,
        env={
            "WS_MAX_PENDING_OUTPUT_BYTES": str(CAP),
            "CHAT_MESSAGE_RATE": "off",
            "CHAT_MAX_CONTENT_CHARS": str(SIZE),
            "WS_MAX_CONNECTIONS_PER_USER": "0",
        },
    ).start()
    yield proc
    proc.stop()


@pytest.fixture
def people(make_user, token_for):
    Room.objects.create(slug="general", name="General")
    return {name: token_for(make_user(name)) for name in ("alice", "carol")}


async def read_until_closed(conn) -> tuple[int, int | None]:
    """How many message frames a stalled client finally reads, and its close code."""
    count = 0
    try:
        while True:
            frame = json.loads(await asyncio.wait_for(conn.recv(), 30))
            count += frame["type"] == "message"
    except websockets.ConnectionClosed as closed:
        return count, closed.rcvd.code if closed.rcvd else None


async def test_a_sites_26_mb_stream_to_a_pausing_reader_arrives_while_the_package_keeps_its_bound(
    guest, people
):
    stalled = await slow_client(guest, people["carol"], path="/ws/?tag=stalled")
    await stalled.send(json.dumps({"type": "join", "room": "general"}))
    reader = await slow_client(guest, people["carol"], path="/guest/stream/")
    alice = await Ws.connect(guest.ws, token=people["alice"])
    await alice.join("general")
    await asyncio.sleep(0.5)  # the stalled client's join is in

    async def post_all() -> None:
        for n in range(MESSAGES):
            await alice.send(
                {
                    "type": "message",
                    "room": "general",
                    "content": f"{n:05d}" + "m" * (SIZE - 5),
                    "client_id": str(uuid.uuid4()),
                }
            )
            await alice.recv_type("ack", timeout=30)
            alice.backlog.clear()

    posting = asyncio.create_task(post_all())
    await asyncio.sleep(4)  # the site's reader pauses; the stream piles up in daphne
    got = []
    for _ in range(STREAM_FRAMES):
        got.append(await asyncio.wait_for(reader.recv(), 30))
    assert len(got) == STREAM_FRAMES
    assert all(frame == stream_frame(n) for n, frame in enumerate(got))  # intact, in order
    assert sum(map(len, got)) > 26_000_000
    await reader.close()

    await posting
    received, code = await read_until_closed(stalled)
    assert code == 4413, (code, received)
    assert received < MESSAGES
    await alice.close()


async def test_the_sites_middleware_sees_every_frame_the_package_sends(guest, people, http):
    tag = uuid.uuid4().hex
    conn = await websockets.connect(
        f"{guest.ws}?tag={tag}",
        additional_headers={"Authorization": f"Token {people['alice']}"},
        open_timeout=10,
    )

    async def frames_until_quiet() -> list[dict]:
        frames = []
        try:
            while True:
                frames.append(json.loads(await asyncio.wait_for(conn.recv(), 1.0)))
        except TimeoutError:
            return frames

    await conn.send(json.dumps({"type": "join", "room": "general"}))
    received = await frames_until_quiet()
    for n in range(5):
        message = {"type": "message", "room": "general", "content": f"hello {n}"}
        await conn.send(json.dumps({**message, "client_id": str(uuid.uuid4())}))
    received += await frames_until_quiet()
    kinds = [frame["type"] for frame in received]
    assert kinds.count("message") == 5 and kinds.count("ack") == 5 and "joined" in kinds

    with http(guest) as client:
        counted = client.get("/guest/sent/", params={"tag": tag}).json()["sent"]
    assert counted == len(received)
    await conn.close()


async def test_the_sites_http_keeps_twisteds_write_and_the_collector_is_left_alone(guest):
    async with httpx.AsyncClient(base_url=guest.http, timeout=30) as client:
        state = (await client.get("/guest/server/")).json()
        assert state["tcp_write_stock"] and state["handle_reply_stock"]
        assert state["server_close_stock"] and state["factory_stock"]
        assert state["autobahn_timings_str"]
        assert state["gc_now"] == state["gc_at_start"]
        assert state["gc_now"]["freeze_count"] == 0 and not state["paced"]

        async with client.stream("GET", "/guest/big/") as response:
            await asyncio.sleep(2)  # the client pauses; the body waits in the server
            body = b"".join([chunk async for chunk in response.aiter_raw()])
    assert body == b"".join(big_chunk(n) for n in range(BIG_CHUNKS))
