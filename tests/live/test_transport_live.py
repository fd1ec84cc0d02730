"""
daphne's transport as django_realtime/daphne_transport.py tunes it, over real
sockets: frames are written to the socket at once when nothing is queued, and
queued behind what the socket has not yet taken otherwise. The large replay
to a stalled reader runs under uvicorn too.
"""

import asyncio
import json

import psycopg
import pytest
import websockets

from chat.models import Room

from .conftest import Ws, database_url

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]


@pytest.fixture
def people(make_user, token_for):
    Room.objects.create(slug="general", name="General")
    return {name: token_for(make_user(name)) for name in ("alice", "bob")}


async def test_a_reader_that_stalls_during_a_large_replay_gets_every_frame_intact_in_order(
    unlimited_protocol_server, people
):
    """1,000 messages of 4,000 four-byte characters (16 MB) replayed to a
    client that reads nothing for a second: far more than the sockets'
    buffers take, so most frames wait in the server's buffer (Twisted's
    under daphne, asyncio's transport under uvicorn) behind a partial write;
    then 300 more arrive live while the backlog drains."""
    count, live, size = 1000, 300, 4000

    def content(n: int) -> str:
        return f"{n:06d}" + "😀" * (size - 6)

    async def post(ws: Ws, numbers: range) -> None:
        # The poster reads as it posts (its own messages come back to it): one
        # that did not would be a stalled reader itself, closed with 4413.
        for n in numbers:
            await ws.send(
                {
                    "type": "message",
                    "room": "general",
                    "content": content(n),
                    "client_id": f"00000000-0000-4000-8000-{n:012d}",
                }
            )
            await ws.recv_type("ack", timeout=30)
            ws.backlog.clear()

    alice = await Ws.connect(unlimited_protocol_server.ws, token=people["alice"])
    await alice.join("general")
    await post(alice, range(count))
    conn = await websockets.connect(
        unlimited_protocol_server.ws,
        additional_headers={"Authorization": f"Token {people['bob']}"},
        max_queue=1,  # the client buffers almost nothing either
        max_size=2**20,
    )
    await conn.send(json.dumps({"type": "join", "room": "general", "since": 0}))
    await asyncio.sleep(1.0)
    # Then more arrive live while the backlog drains.
    posting = asyncio.create_task(post(alice, range(count, count + live)))
    frames = [json.loads(await asyncio.wait_for(conn.recv(), 20))]
    while len([f for f in frames if f["type"] == "message"]) < count + live:
        frames.append(json.loads(await asyncio.wait_for(conn.recv(), 20)))
    await posting
    assert frames[0]["type"] == "joined" and frames[0]["last_seq"] == count
    messages = [f for f in frames if f["type"] == "message"]
    assert [m["seq"] for m in messages] == list(range(1, count + live + 1))
    assert all(m["content"] == content(n) for n, m in enumerate(messages))
    await conn.close()
    await alice.close()


async def test_a_connection_whose_accept_waits_6_s_still_connects(server, people):
    """daphne drops a WebSocket the application has not accepted within 5 s;
    here the floor is WS_HANDSHAKE_TIMEOUT_SECONDS (30 s), so a client queued
    behind a reconnect storm gets in. The storm is played by a lock on the
    token table that holds the connection's authentication for 6 s."""
    with psycopg.connect(database_url(), autocommit=False) as blocker:
        blocker.execute("LOCK TABLE authtoken_token IN ACCESS EXCLUSIVE MODE")
        connecting = asyncio.create_task(Ws.connect(server.ws, token=people["alice"]))
        await asyncio.sleep(6)
        blocker.rollback()
    ws = await asyncio.wait_for(connecting, 10)
    assert (await ws.join("general"))["type"] == "joined"
    await ws.close()
