"""
Limits across the cluster (contract §1) over real sockets: with two server
processes on one Redis, a user who spreads a flood over both is limited
once, not twice; the per-user connection cap counts the user's connections
on both; and while Redis is away the limits fail open (the process's own
count, a metric) rather than refusing everyone.
"""

import asyncio
import uuid

import httpx
import pytest
import websockets

from chat.models import Room

from .conftest import METRICS_HEADERS, Ws

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]


@pytest.fixture
def alice(make_user, token_for):
    Room.objects.create(slug="general", name="General")
    return token_for(make_user("alice"))


def message(i: int) -> dict:
    return {
        "type": "message",
        "room": "general",
        "content": f"flood {i}",
        "client_id": str(uuid.uuid4()),
    }


async def outcomes(ws: Ws, count: int) -> list[str]:
    """Post `count` messages as fast as the server answers: each ack or error code."""
    got = []
    for i in range(count):
        reply = await ws.request(message(i), "ack", "error")
        got.append(reply["type"] if reply["type"] == "ack" else reply["code"])
    return got


async def test_a_flood_spread_over_two_processes_is_limited_once(daphnes, redis_url, alice):
    one, two = daphnes(redis_url=redis_url), daphnes(redis_url=redis_url)
    a, b = await Ws.connect(one.ws, token=alice), await Ws.connect(two.ws, token=alice)
    for ws in (a, b):
        assert (await ws.join("general"))["type"] == "joined"
    got = await asyncio.gather(outcomes(a, 15), outcomes(b, 15))
    sent = [*got[0], *got[1]]
    # CHAT_MESSAGE_RATE is 20 per 10 s per user per room, whichever process.
    assert sent.count("ack") == 20, got
    assert sent.count("RATE_LIMITED") == 10, got
    for ws in (a, b):
        await ws.close()


async def test_the_connection_cap_counts_both_processes(daphnes, redis_url, alice):
    env = {"WS_MAX_CONNECTIONS_PER_USER": "3"}
    one = daphnes(redis_url=redis_url, env=env)
    two = daphnes(redis_url=redis_url, env=env)
    held = [await Ws.connect(server.ws, token=alice) for server in (one, two, one)]
    for ws in held:
        assert (await ws.request({"type": "ping"}, "pong"))["type"] == "pong"
    extra = await Ws.connect(two.ws, token=alice)
    with pytest.raises(websockets.exceptions.ConnectionClosed):
        await extra.recv(timeout=5)
    assert (extra.conn.close_code, extra.conn.close_reason) == (
        4429,
        "policy: at most 3 connections",
    )
    await held.pop().close()  # one on `one` goes: `two` may take it
    for _ in range(50):
        again = await Ws.connect(two.ws, token=alice)
        try:
            assert (await again.request({"type": "ping"}, "pong"))["type"] == "pong"
            break
        except websockets.exceptions.ConnectionClosed:
            await asyncio.sleep(0.1)
    else:
        pytest.fail("the slot given back on one process was never free on the other")
    for ws in [*held, again]:
        await ws.close()


async def test_while_redis_is_away_the_limits_fail_open(redis_server, daphnes, alice):
    server = daphnes(redis_url=redis_server.url)
    ws = await Ws.connect(server.ws, token=alice)
    assert (await ws.join("general"))["type"] == "joined"
    redis_server.kill()
    # Posting still works (stored in PostgreSQL, acked), and the process's own
    # count still stops a flood.
    got = await outcomes(ws, 25)
    assert got[:20] == ["ack"] * 20 and set(got[20:]) == {"RATE_LIMITED"}, got
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as client:
        metrics = (await client.get("/metrics", headers=METRICS_HEADERS)).text
    line = next(
        line
        for line in metrics.splitlines()
        if line.startswith('realtime_limits_fail_open_total{kind="rate"}')
    )
    assert float(line.split()[-1]) >= 25
    assert "counts per process until it does" in server.log_text()
    await ws.close()
