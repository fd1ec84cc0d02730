"""
Faults injected for real: Redis killed, restarted empty or frozen, PostgreSQL
stopped, a server process killed or drained, a group membership expiring.
Each test starts the servers it breaks, and every wait is bounded.
"""

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid

import httpx
import pytest
import websockets
from asgiref.sync import sync_to_async

from chat.models import Message, Room
from tests.servers import PostgresServer, RedisServer

from .conftest import METRICS_HEADERS, ROOT, SERVER_KINDS, Ws

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

# Fast refreshes keep these tests short; production defaults are documented.
FAST = {"GROUP_REFRESH_SECONDS": "1", "CHAT_MESSAGE_RATE": "off"}


@pytest.fixture
def people(make_user, token_for):
    alice, bob = make_user("alice"), make_user("bob")
    Room.objects.create(slug="general", name="General")
    return {"alice": token_for(alice), "bob": token_for(bob)}


async def seqs_until(ws: Ws, room: str, upto: int, timeout: float = 20.0) -> list[int]:
    """Message seqs received in `room` until `upto` arrives."""
    seen: list[int] = []
    while not seen or seen[-1] < upto:
        frame = await ws.recv_type("message", timeout=timeout)
        if frame["room"] == room:
            seen.append(frame["seq"])
    return seen


@pytest.mark.parametrize("backend", ["pubsub-resilient", "core-resilient"])
async def test_redis_killed_and_restarted_empty_loses_nothing(
    redis_server, daphnes, people, backend
):
    """Posts made while Redis is dead are stored and acked; connections stay
    open (no 1011); once Redis is back, empty, every member gets them and
    live delivery resumes. Both channel layers the project supports."""
    server = daphnes(redis_url=redis_server.url, env={**FAST, "CHANNEL_LAYER_BACKEND": backend})
    a = await Ws.connect(server.ws, token=people["alice"])
    b = await Ws.connect(server.ws, token=people["bob"])
    await a.join("general")
    await b.join("general")
    await a.post("general", "before")
    assert await seqs_until(b, "general", 1) == [1]

    redis_server.kill()
    during = await asyncio.wait_for(a.post("general", "while redis is dead"), 10)
    assert during["type"] == "ack" and during["seq"] == 2
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as client:
        rest = await client.post(
            "/api/rooms/general/messages/",
            json={"content": "rest while dead"},
            headers={"Authorization": f"Token {people['alice']}"},
        )
    assert rest.status_code == 201 and rest.json()["seq"] == 3
    assert (await b.request({"type": "ping"}, "pong"))["type"] == "pong"

    restarted = RedisServer(port=redis_server.port).start()
    try:
        assert await seqs_until(b, "general", 3) == [2, 3]
        await a.post("general", "after")
        assert await seqs_until(b, "general", 4) == [4]
        assert b.conn.close_code is None and a.conn.close_code is None
    finally:
        await a.close()
        await b.close()
        restarted.stop()


async def test_redis_frozen_does_not_hang_acks_or_rest(redis_server, daphnes, people):
    """With Redis stopped (SIGSTOP) for 10 s, posts are acked from the database
    and REST answers, each within a bounded time; the messages arrive after."""
    server = daphnes(redis_url=redis_server.url, env=FAST)
    a = await Ws.connect(server.ws, token=people["alice"])
    b = await Ws.connect(server.ws, token=people["bob"])
    await a.join("general")
    await b.join("general")
    redis_server.proc.send_signal(signal.SIGSTOP)
    try:
        ack = await asyncio.wait_for(a.post("general", "frozen"), 8)
        assert ack["type"] == "ack" and ack["seq"] == 1
        async with httpx.AsyncClient(base_url=server.http, timeout=10) as client:
            rest = await client.get(
                "/api/rooms/general/messages/",
                headers={"Authorization": f"Token {people['bob']}"},
            )
        assert [m["seq"] for m in rest.json()["results"]] == [1]
        await asyncio.sleep(8)  # Redis stays frozen about 10 s in all
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    assert await seqs_until(b, "general", 1, timeout=30) == [1]
    await a.post("general", "thawed")
    assert await seqs_until(b, "general", 2, timeout=30) == [2]
    await a.close()
    await b.close()


async def test_a_membership_older_than_the_group_expiry_still_receives(
    redis_server, daphnes, people
):
    """channels#999: a socket must not go deaf when its group membership expires."""
    server = daphnes(
        redis_url=redis_server.url,
        # Group expiry exists in the list-based layer; the pub/sub one has none.
        env={
            **FAST,
            "CHANNEL_LAYER_BACKEND": "core-resilient",
            "CHANNEL_GROUP_EXPIRY_SECONDS": "2",
        },
    )
    a = await Ws.connect(server.ws, token=people["alice"])
    b = await Ws.connect(server.ws, token=people["bob"])
    await a.join("general")
    await b.join("general")
    await asyncio.sleep(5)
    await a.post("general", "after expiry")
    assert await seqs_until(b, "general", 1) == [1]
    await a.close()
    await b.close()


@pytest.mark.parametrize("kind", SERVER_KINDS)
async def test_sigterm_drains_with_1012_and_clients_resume_elsewhere(
    redis_server, daphnes, people, kind
):
    """daphne: drain.py's trigger before the reactor stops; uvicorn: its own
    shutdown closes every WebSocket with 1012 before it waits for them. A
    document socket is closed with 1012 too (y-websocket reconnects)."""
    one = daphnes(kind=kind, redis_url=redis_server.url, env=FAST)
    two = daphnes(kind=kind, redis_url=redis_server.url, env=FAST)
    b = await Ws.connect(one.ws, token=people["bob"])
    await b.join("general")
    editor = await websockets.connect(
        one.ws.rstrip("/") + "/docs/general/notes",
        additional_headers={"Authorization": f"Token {people['bob']}"},
    )
    await editor.recv(10)  # the server's sync step 1: it is attached
    a = await Ws.connect(two.ws, token=people["alice"])
    await a.post("general", "one")
    assert await seqs_until(b, "general", 1) == [1]

    one.signal(signal.SIGTERM)
    with pytest.raises(websockets.exceptions.ConnectionClosed):
        await b.recv(timeout=10)
    assert b.conn.close_code == 1012
    with pytest.raises(websockets.exceptions.ConnectionClosed):
        while True:
            await editor.recv(10)
    assert editor.close_code == 1012
    await a.post("general", "two")
    await a.post("general", "three")
    b2 = await Ws.connect(two.ws, token=people["bob"])
    await b2.join("general", since=1)
    assert await seqs_until(b2, "general", 3) == [2, 3]
    one.wait_exit(15)
    await a.close()
    await b2.close()


async def test_a_killed_server_loses_nothing_and_an_unacked_retry_stores_once(
    redis_server, daphnes, people
):
    """SIGKILL a process: its clients reconnect to the other and resume with
    `since`; a send whose ack was lost is retried with its client_id: one row."""
    one = daphnes(redis_url=redis_server.url, env=FAST)
    two = daphnes(redis_url=redis_server.url, env=FAST)
    b = await Ws.connect(one.ws, token=people["bob"])
    await b.join("general")
    a = await Ws.connect(two.ws, token=people["alice"])
    await a.join("general")
    for i in range(3):
        await a.post("general", f"m{i}")
    assert await seqs_until(b, "general", 3) == [1, 2, 3]

    cid = str(uuid.uuid4())
    await b.send({"type": "message", "room": "general", "content": "maybe", "client_id": cid})
    one.signal(signal.SIGKILL)
    with pytest.raises(websockets.exceptions.ConnectionClosed):
        while True:
            await b.recv(timeout=10)
    await a.post("general", "while bob is away")

    b2 = await Ws.connect(two.ws, token=people["bob"])
    await b2.join("general", since=3)
    retry = await b2.post("general", "maybe", client_id=cid)
    assert retry["type"] == "ack"
    assert await Message.objects.filter(client_id=cid).acount() == 1
    total = await Message.objects.acount()
    seen = await seqs_until(b2, "general", total)
    assert seen == list(range(4, total + 1))
    await a.close()
    await b2.close()


@pytest.fixture
def own_postgres():
    """A PostgreSQL of this test's own, migrated, with alice and bob and tokens."""
    pg = PostgresServer().start()
    env = {**os.environ, "DATABASE_URL": pg.url}
    env.pop("REDIS_URL", None)
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    script = (
        "from django.contrib.auth.models import User;"
        "from rest_framework.authtoken.models import Token;"
        "from chat.models import Room;"
        "Room.objects.create(slug='general', name='General');"
        "print(' '.join(Token.objects.create(user=User.objects.create(username=n)).key"
        " for n in ['alice', 'bob']))"
    )
    out = subprocess.run(
        [*manage, "shell", "-c", script],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    alice, bob = out.stdout.strip().splitlines()[-1].split()
    yield pg, {"alice": alice, "bob": bob}
    pg.stop()


def test_own_postgres_fixture_is_isolated(own_postgres):
    """The fault test's database is not the suite's: nothing leaks into it."""
    assert not Room.objects.exists()


async def test_postgres_stopped_refuses_posts_as_unavailable_and_recovers(
    own_postgres, redis_server, daphnes
):
    pg, tokens = own_postgres
    server = daphnes(redis_url=redis_server.url, env=FAST, database=pg.url)
    a = await Ws.connect(server.ws, token=tokens["alice"])
    b = await Ws.connect(server.ws, token=tokens["bob"])
    await a.join("general")
    await b.join("general")

    await sync_to_async(pg._run)("pg_ctl", "-D", str(pg.data), "-m", "fast", "stop")
    refused = await asyncio.wait_for(
        a.request(
            {
                "type": "message",
                "room": "general",
                "content": "lost?",
                "client_id": str(uuid.uuid4()),
                "ref": "m",
            },
            "ack",
            "error",
        ),
        15,
    )
    assert refused["type"] == "error" and refused["code"] == "UNAVAILABLE"
    assert refused["ref"] == "m"
    async with httpx.AsyncClient(base_url=server.http, timeout=15) as client:
        rest = await client.post(
            "/api/rooms/general/messages/",
            json={"content": "x"},
            headers={"Authorization": f"Token {tokens['alice']}"},
        )
        assert rest.status_code == 503 and rest.json()["code"] == "UNAVAILABLE"
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["database"].startswith("error")
    assert not [f for f in await b.quiet(1.0) if f["type"] == "message"]

    await sync_to_async(pg._run)(
        "pg_ctl",
        "-D",
        str(pg.data),
        "-o",
        f"-p {pg.port} -k {pg.dir} -c listen_addresses=127.0.0.1",
        "-l",
        str(pg.dir / "server.log"),
        "-w",
        "start",
    )
    deadline = time.monotonic() + 20
    while True:
        frame = await a.post("general", "back")
        if frame["type"] == "ack" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert frame["type"] == "ack" and frame["seq"] == 1
    assert await seqs_until(b, "general", 1) == [1]
    await a.close()
    await b.close()


async def test_health_ready_and_metrics(redis_server, daphnes, people):
    server = daphnes(redis_url=redis_server.url, env=FAST)
    a = await Ws.connect(server.ws, token=people["alice"])
    await a.join("general")
    await a.post("general", "counted")
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ok", "database": "ok", "redis": "ok"}
        text = (await client.get("/metrics", headers=METRICS_HEADERS)).text
        assert "realtime_connections 1.0" in text
        assert "realtime_messages_stored_total 1.0" in text
        assert 'realtime_frames_in_total{type="message"} 1.0' in text
        redis_server.kill()
        down = await client.get("/readyz")
        assert down.status_code == 503 and down.json()["redis"].startswith("error")
    await a.close()
