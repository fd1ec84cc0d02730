"""
Presence on several Redis shards (three real redis-servers): each room's keys
live on one shard, the shard the channel layer gives the room's group, rooms
spread over every shard, a user's keys live on the user's shard; a dead shard
costs only its rooms, and the next heartbeat rebuilds them once it is back.
"""

from __future__ import annotations

import asyncio
import re

import pytest
import redis.asyncio
from channels_redis.pubsub import RedisPubSubChannelLayer

from django_realtime import redisconn
from django_realtime.bus import room_group, user_group
from presence.redis_store import RedisPresenceStore
from presence.store import Change
from tests.servers import RedisServer

ROOMS = range(1, 31)


@pytest.fixture
def servers():
    started = [RedisServer().start() for _ in range(3)]
    yield started
    for server in started:
        server.stop()


@pytest.fixture
def urls(servers) -> list[str]:
    return [server.url for server in servers]


def enter(room_id: int, user_id: int, channel: str, status: str = "online") -> dict:
    return {
        "room_id": room_id,
        "room_slug": f"room-{room_id}",
        "user_id": user_id,
        "username": f"user{user_id}",
        "channel": channel,
        "status": status,
    }


async def keys_on(url: str, prefix: str) -> list[str]:
    client = redis.asyncio.Redis.from_url(url, decode_responses=True)
    try:
        return sorted([k async for k in client.scan_iter(f"{prefix}*")])
    finally:
        await client.aclose()


async def test_the_shard_of_a_room_is_the_one_the_pubsub_layer_gives_its_group(urls):
    """Presence follows the layer: a room's presence and its deliveries share a shard."""
    layer = RedisPubSubChannelLayer(hosts=urls)
    loop_layer = layer._get_layer()
    try:
        for room_id in ROOMS:
            group_channel = loop_layer._get_group_channel_name(room_group(room_id))
            expected = loop_layer._get_shard(group_channel)
            assert loop_layer._shards[redisconn.room_shard(room_id, 3)] is expected
        for user_id in range(1, 20):
            group_channel = loop_layer._get_group_channel_name(user_group(user_id))
            expected = loop_layer._get_shard(group_channel)
            assert loop_layer._shards[redisconn.user_shard(user_id, 3)] is expected
    finally:
        await layer.flush()


async def test_each_rooms_keys_live_on_its_one_shard_and_rooms_spread_over_all(urls):
    store = RedisPresenceStore(url=urls, prefix="p:")
    try:
        for room_id in ROOMS:
            await store.connect(user_id=room_id, username=f"user{room_id}", channel=f"c{room_id}")
            await store.enter(**enter(room_id, room_id, f"c{room_id}"))
            await store.typing_start(
                room_id=room_id,
                room_slug=f"room-{room_id}",
                user_id=room_id,
                username=f"user{room_id}",
                ttl_seconds=6,
            )
        shards_used = set()
        for shard, url in enumerate(urls):
            for key in await keys_on(url, "p:"):
                tag = re.search(r"\{(room|user):(\d+)\}", key)
                if key == "p:due":
                    continue
                assert tag, key
                kind, ident = tag.group(1), int(tag.group(2))
                if kind == "room":
                    assert redisconn.room_shard(ident, 3) == shard, key
                    shards_used.add(shard)
                else:
                    assert redisconn.user_shard(ident, 3) == shard, key
        assert shards_used == {0, 1, 2}
        for room_id in ROOMS:
            assert await store.members(room_id=room_id) == [
                {"user": {"id": room_id, "username": f"user{room_id}"}, "status": "online"}
            ]
    finally:
        await store.aclose()


async def test_a_dead_processs_leases_are_swept_once_on_every_shard(urls, realtime):
    realtime.PRESENCE_TTL_SECONDS = 1.0
    dead = RedisPresenceStore(url=urls, prefix="p:")
    live_a = RedisPresenceStore(url=",".join(urls), prefix="p:")  # a comma-separated REDIS_URL
    live_b = RedisPresenceStore(url=urls, prefix="p:")
    try:
        await dead.connect(user_id=7, username="user7", channel="dead")
        for room_id in ROOMS:
            await dead.enter(**enter(room_id, 7, "dead"))
        await dead.heartbeat()  # its last words: every key kept two TTLs from now
        await asyncio.sleep(1.3)
        sweeps = await asyncio.gather(live_a.sweep(), live_b.sweep(), live_a.sweep())
        changes = sorted((c for s in sweeps for c in s.changes), key=lambda c: c.room_id)
        assert changes == [Change(r, 7, "user7", None, f"room-{r}") for r in ROOMS]
        assert [u for s in sweeps for u in s.offline_user_ids] == [7]
        for url in urls:
            assert await keys_on(url, "p:") == []  # nothing left behind
    finally:
        for store in (dead, live_a, live_b):
            await store.aclose()


async def test_a_dead_shard_costs_only_its_rooms_which_the_heartbeat_rebuilds(
    servers, urls, realtime
):
    """Kill one shard: rooms on the others keep their presence and take joins;
    the dead shard's rooms answer `no change` within the timeout. Restarted
    empty, the next heartbeat registers its rooms' leases again, as joins."""
    realtime.PRESENCE_REDIS_TIMEOUT_SECONDS = 0.5
    store = RedisPresenceStore(url=urls, prefix="p:")
    other = RedisPresenceStore(url=urls, prefix="p:")
    try:
        for room_id in ROOMS:
            await store.connect(user_id=7, username="user7", channel=f"c{room_id}")
            await store.enter(**enter(room_id, 7, f"c{room_id}", status="away"))
        dead_shard = 1
        dead_rooms = [r for r in ROOMS if redisconn.room_shard(r, 3) == dead_shard]
        live_rooms = [r for r in ROOMS if r not in dead_rooms]
        assert dead_rooms and live_rooms
        servers[dead_shard].kill()

        for room_id in live_rooms:
            assert await other.enter(**enter(room_id, 8, f"o{room_id}")) == Change(
                room_id, 8, "user8", "online", f"room-{room_id}"
            )
            assert [m["user"]["id"] for m in await other.members(room_id=room_id)] == [7, 8]
        for room_id in dead_rooms:
            assert await other.members(room_id=room_id) == []

        port = servers[dead_shard].port
        servers[dead_shard].stop()
        servers[dead_shard] = RedisServer(port=port).start()  # back, empty
        # The first heartbeat may still meet the pool's connection to the
        # killed server (dropped then); the next one rebuilds.
        rebuilt = []
        for _ in range(3):
            rebuilt += await store.heartbeat()
            await asyncio.sleep(0.1)
        assert sorted(rebuilt, key=lambda c: c.room_id) == [
            Change(r, 7, "user7", "away", f"room-{r}") for r in dead_rooms
        ]
        assert await store.heartbeat() == []  # once
        for room_id in dead_rooms:
            assert await other.members(room_id=room_id) == [
                {"user": {"id": 7, "username": "user7"}, "status": "away"}
            ]
    finally:
        await store.aclose()
        await other.aclose()
