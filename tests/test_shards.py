"""
What lives where on several Redis shards (three real redis-servers), besides
presence (tests/presence/test_shards.py): the shared limits and topic
histories each keep a key on one shard, spread over all of them, and a dead
shard costs only what it holds.
"""

from __future__ import annotations

import pytest
import redis

from django_realtime import limits, shards
from django_realtime.errors import RateLimited, Unavailable
from django_realtime.topics.history import history
from django_realtime.topics.names import Namespace
from tests.servers import RedisServer


@pytest.fixture
def servers(realtime):
    started = [RedisServer().start() for _ in range(3)]
    realtime.REDIS_URL = [server.url for server in started]
    yield started
    for server in started:
        server.stop()


def keys_by_shard(servers) -> list[list[str]]:
    return [sorted(k.decode() for k in redis.Redis.from_url(s.url).scan_iter("*")) for s in servers]


async def test_a_users_slots_live_on_the_users_shard_and_users_spread(servers):
    slots = limits.Slots("ws")
    for user_id in range(1, 16):
        assert await slots.take(user_id, f"conn-{user_id}", cap=2)
    held = keys_by_shard(servers)
    for user_id in range(1, 16):
        shard = shards.user_shard(user_id, 3)
        assert f"limit:ws:{user_id}" in held[shard]
    assert all(held)  # every shard holds some


def test_a_rate_window_lives_on_one_shard_and_counts_one_budget(servers):
    one, two = limits.SharedLimiter(), limits.SharedLimiter()
    for room_id in range(12):
        one.hit(("msg", 7, room_id), "2/10s")
        two.hit(("msg", 7, room_id), "2/10s")
        with pytest.raises(RateLimited):
            one.hit(("msg", 7, room_id), "2/10s")
    held = keys_by_shard(servers)
    for room_id in range(12):
        name = f"limit:rate:msg:7:{room_id}"
        assert [name in keys for keys in held].count(True) == 1
    assert all(held)


async def test_a_topics_history_lives_on_its_shard_and_a_dead_shard_costs_only_its_topics(
    servers,
):
    store = history()
    ns = Namespace("shop")
    topics = [f"shop:item-{i}" for i in range(12)]
    for topic in topics:
        await store.apublish(
            topic, {"n": 1}, namespace=ns, key=None, idempotency_key=None, audience=None
        )
    held = keys_by_shard(servers)
    for topic in topics:
        shard = shards.topic_shard(topic, 3)
        assert any(f"{{{topic}}}" in key for key in held[shard]), topic
        assert not any(
            f"{{{topic}}}" in key for i, keys in enumerate(held) if i != shard for key in keys
        )
    assert all(held)

    servers[0].kill()
    for topic in topics:
        if shards.topic_shard(topic, 3) == 0:
            with pytest.raises(Unavailable):
                await store.apublish(
                    topic, {"n": 2}, namespace=ns, key=None, idempotency_key=None, audience=None
                )
        else:
            published = await store.apublish(
                topic, {"n": 2}, namespace=ns, key=None, idempotency_key=None, audience=None
            )
            assert published.publication.offset == 2
