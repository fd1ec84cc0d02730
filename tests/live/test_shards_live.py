"""
Two real daphne processes on three Redis shards (REDIS_URL=a,b,c): rooms on
every shard deliver across processes; killing one shard affects only its
rooms (the others keep delivering and keep their presence), and when it comes
back, restarted empty, its rooms recover: deliveries resume, clients that
resume with `since` get every seq once, in order, and their presence is
rebuilt. Every client ends holding every seq once, in order.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from asgiref.sync import sync_to_async

from chat.models import Room
from django_realtime import redisconn
from tests.servers import RedisServer

from .conftest import Ws

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

SHARDS = 3
ROOMS_PER_SHARD = 2
# Presence heartbeats and sweeps every second, so a rebuilt shard's presence
# shows within seconds; the group refresh stays at its default, so what
# arrives during the outage arrives live, not by a periodic catch-up.
ENV = {
    "CHAT_MESSAGE_RATE": "off",
    "PRESENCE_HEARTBEAT_SECONDS": "1",
    "PRESENCE_SWEEP_SECONDS": "1",
    "PRESENCE_TTL_SECONDS": "5",
}


@pytest.fixture
def shards():
    servers = [RedisServer().start() for _ in range(SHARDS)]
    yield servers
    for server in servers:
        server.stop()


def make_rooms() -> dict[int, list[str]]:
    """Public rooms, ROOMS_PER_SHARD on each shard: shard -> slugs."""
    by_shard: dict[int, list[str]] = {i: [] for i in range(SHARDS)}
    n = 0
    while min(len(slugs) for slugs in by_shard.values()) < ROOMS_PER_SHARD:
        room = Room.objects.create(slug=f"shard-room-{n}", name=f"Room {n}")
        n += 1
        slugs = by_shard[redisconn.room_shard(room.pk, SHARDS)]
        if len(slugs) < ROOMS_PER_SHARD:
            slugs.append(room.slug)
        else:
            room.delete()
    return by_shard


@pytest.fixture
def people(make_user, token_for):
    users = {name: make_user(name) for name in ("alice", "bob", "carol")}
    return {name: token_for(user) for name, user in users.items()}


async def collect(ws: Ws, seen: dict[str, list[int]], upto: dict[str, int], timeout=30.0) -> None:
    """Read message frames into `seen` (room -> seqs) until every room of
    `upto` has reached its seq."""
    deadline = time.monotonic() + timeout
    while any(not seen[room] or seen[room][-1] < last for room, last in upto.items()):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"still waiting: {seen} for {upto}")
        frame = await ws.recv_type("message", timeout=remaining)
        seen.setdefault(frame["room"], []).append(frame["seq"])


async def presence_of(server, token: str, slug: str) -> list[str]:
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as client:
        response = await client.get(
            f"/api/rooms/{slug}/presence/", headers={"Authorization": f"Token {token}"}
        )
    assert response.status_code == 200, response.text
    return sorted(entry["user"]["username"] for entry in response.json())


async def eventually_present(server, token: str, slug: str, names: list[str]) -> None:
    deadline = time.monotonic() + 30
    while (listed := await presence_of(server, token, slug)) != names:
        assert time.monotonic() < deadline, f"{slug}: {listed}, not {names}"
        await asyncio.sleep(0.5)


async def test_a_dead_shard_costs_only_its_rooms_and_they_recover_when_it_returns(
    shards, daphnes, people
):
    by_shard = await sync_to_async(make_rooms)()
    rooms = [slug for slugs in by_shard.values() for slug in slugs]
    redis_url = ",".join(server.url for server in shards)
    one = daphnes(redis_url=redis_url, env=ENV)
    two = daphnes(redis_url=redis_url, env=ENV)
    alice = await Ws.connect(one.ws, token=people["alice"])
    bob = await Ws.connect(two.ws, token=people["bob"])
    for room in rooms:
        assert (await alice.join(room))["type"] == "joined"
        assert (await bob.join(room))["type"] == "joined"
    seen = {"alice": {room: [] for room in rooms}, "bob": {room: [] for room in rooms}}
    last = dict.fromkeys(rooms, 0)

    async def post(ws: Ws, room: str, content: str) -> None:
        ack = await ws.post(room, content)
        assert ack["type"] == "ack", ack
        last[room] = ack["seq"]

    # Every shard carries its rooms across the two processes, presence too.
    for room in rooms:
        await post(alice, room, "from one")
        await post(bob, room, "from two")
    await collect(alice, seen["alice"], last)
    await collect(bob, seen["bob"], last)
    for room in rooms:
        await eventually_present(one, people["alice"], room, ["alice", "bob"])

    # One shard dies: posts are stored and acked everywhere; the rooms of the
    # other shards keep delivering live across processes, and their presence
    # keeps moving (carol's join reaches alice on the other process).
    dead = 0
    dead_rooms = by_shard[dead]
    live_rooms = [room for room in rooms if room not in dead_rooms]
    shards[dead].kill()
    for room in rooms:
        await post(alice, room, "while a shard is dead")
    await collect(bob, seen["bob"], {room: last[room] for room in live_rooms}, timeout=15)
    carol = await Ws.connect(two.ws, token=people["carol"])
    await carol.join(live_rooms[0])
    joined: list[str] = []
    while "carol" not in joined:
        frame = await alice.recv_type("presence", timeout=15)
        if frame["room"] == live_rooms[0]:
            joined += [j["user"]["username"] for j in frame["joins"]]
    await carol.close()

    # It comes back empty: its rooms recover. What was posted meanwhile
    # arrives, live delivery resumes, presence is rebuilt.
    port = shards[dead].port
    shards[dead].stop()
    shards[dead] = RedisServer(port=port).start()
    for room in rooms:
        await post(bob, room, "after the shard came back")
    await collect(alice, seen["alice"], last, timeout=45)
    await collect(bob, seen["bob"], last, timeout=45)
    for room in dead_rooms:
        await eventually_present(one, people["alice"], room, ["alice", "bob"])
        await eventually_present(two, people["bob"], room, ["alice", "bob"])

    # A client that resumes with `since` gets every seq after it once, in order.
    resumer = await Ws.connect(two.ws, token=people["carol"])
    for room in rooms:
        joined = await resumer.join(room, since=1)
        assert joined["type"] == "joined" and joined["last_seq"] == last[room]
    resumed = {room: [] for room in rooms}
    await collect(resumer, resumed, last)
    assert resumed == {room: list(range(2, last[room] + 1)) for room in rooms}

    # Every client holds every seq once, in order (nothing more arrives).
    for ws, who in ((alice, "alice"), (bob, "bob"), (resumer, "carol")):
        extra = [f for f in await ws.quiet(1.0) if f["type"] == "message"]
        assert extra == [], who
    expected = {room: list(range(1, last[room] + 1)) for room in rooms}
    assert seen["alice"] == expected
    assert seen["bob"] == expected
    for ws in (alice, bob, resumer):
        assert ws.conn.close_code is None
        await ws.close()
