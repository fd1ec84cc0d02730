"""
django_realtime.redisconn.Batched, on a real redis-server: concurrent calls
go out in one pipeline and each caller gets its own reply or its own error;
a script Redis lost is loaded and run again; a dead Redis fails the calls
under way and the next ones succeed once it is back.
"""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio
from redis.exceptions import ResponseError

from django_realtime import redisconn

COUNT = redisconn.Script("return redis.call('INCRBY', KEYS[1], ARGV[1])")


@pytest.fixture
async def client(redis_server):
    client = redis.asyncio.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


async def test_concurrent_calls_go_together_and_each_gets_its_own_reply_or_error(
    redis_server, client
):
    batch = redisconn.batched(client)
    assert redisconn.batched(client) is batch
    await client.set("text", "not a number")
    calls = [batch.script(COUNT, [f"n{i % 3}"], [1]) for i in range(30)]
    calls.insert(7, batch.call("INCR", "text"))  # an error for this caller only
    calls.insert(9, batch.call("HGETALL", "missing"))
    replies = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(replies[7], ResponseError)
    assert replies[9] == {}  # parsed as redis-py parses HGETALL
    counts = [r for i, r in enumerate(replies) if i not in (7, 9)]
    # In call order: each key counts 1, 2, ... 10.
    assert counts == [i // 3 + 1 for i in range(30)]
    # Together: one connection carried them all (one call each would have
    # taken a connection each), besides the one asking.
    inspector = redis.Redis.from_url(redis_server.url)
    assert inspector.info("clients")["connected_clients"] == 2


async def test_a_script_redis_lost_is_loaded_and_run_again(client):
    batch = redisconn.batched(client)
    assert await batch.script(COUNT, ["n"], [5]) == 5
    await client.script_flush()
    assert await asyncio.gather(*(batch.script(COUNT, ["n"], [1]) for _ in range(3))) == [6, 7, 8]


async def test_a_dead_redis_fails_the_calls_under_way_and_the_next_ones_succeed(
    redis_server, client
):
    batch = redisconn.batched(client)
    assert await batch.call("SET", "k", "1")
    redis_server.kill()
    failed = await asyncio.gather(
        *(batch.call("GET", "k") for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(outcome, Exception) for outcome in failed), failed
    redis_server.start()  # same port, empty
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        try:
            replies = await asyncio.gather(*(batch.script(COUNT, ["k"], [2]) for _ in range(3)))
            break
        except Exception:  # noqa: BLE001 - not back yet
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)
    assert replies == [2, 4, 6]  # an empty Redis: the script loaded again, the key new
