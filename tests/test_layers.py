"""
The pub/sub layer's shard sends its publishes and (un)subscribes together
(django_realtime.layers._WatchedShard): on a real redis-server, two layer
instances stand for two processes, and what one sends concurrently reaches
the other whole and in call order; subscribes and unsubscribes keep their
order; a Redis that dies fails every waiting call, and the next calls go out
once it answers again.
"""

from __future__ import annotations

import asyncio

import pytest

from django_realtime.layers import ResilientRedisPubSubChannelLayer

_pending: dict[str, asyncio.Future] = {}


@pytest.fixture
async def layers(redis_server):
    """Two layer instances on the server, standing for two processes: (sender, receiver)."""
    pair = [ResilientRedisPubSubChannelLayer(hosts=[redis_server.url]) for _ in range(2)]
    yield pair
    for receiving in _pending.values():
        receiving.cancel()
    _pending.clear()
    for layer in pair:
        await layer.flush()


async def drain(layer, channel: str, *, quiet: float = 0.3) -> list[dict]:
    """Everything the channel receives until it has been quiet for `quiet` s.
    A receive is never cancelled (channels_redis unsubscribes a channel whose
    receive is cancelled): the pending one is kept for the next call."""
    got = []
    while True:
        receiving = _pending.pop(channel, None) or asyncio.ensure_future(layer.receive(channel))
        done, _ = await asyncio.wait({receiving}, timeout=quiet)
        if not done:
            _pending[channel] = receiving
            return got
        got.append(receiving.result())


async def test_concurrent_publishes_all_arrive_in_the_order_they_were_called(layers):
    sender, receiver = layers
    channel = await receiver.new_channel()
    for group in ("a", "b", "c"):
        await receiver.group_add(group, channel)
    await asyncio.gather(
        *(sender.group_send("abc"[n % 3], {"type": "x", "n": n}) for n in range(300))
    )
    got = await drain(receiver, channel)
    assert [event["n"] for event in got] == list(range(300))


async def test_subscribes_and_unsubscribes_called_together_keep_their_order(layers):
    sender, receiver = layers
    channel = await receiver.new_channel()
    # In one batch: "in" ends subscribed, "out" ends unsubscribed.
    await asyncio.gather(
        receiver.group_add("in", channel),
        receiver.group_add("out", channel),
        receiver.group_discard("in", channel),
        receiver.group_discard("out", channel),
        receiver.group_add("in", channel),
    )
    await sender.group_send("in", {"type": "x", "to": "in"})
    await sender.group_send("out", {"type": "x", "to": "out"})
    assert [event["to"] for event in await drain(receiver, channel)] == ["in"]


async def test_a_dead_redis_fails_every_waiting_call_and_the_next_ones_go_out_once_it_is_back(
    redis_server, layers
):
    sender, receiver = layers
    channel = await receiver.new_channel()
    await receiver.group_add("g", channel)
    await sender.group_send("g", {"type": "x", "n": 0})
    redis_server.kill()
    failed = await asyncio.gather(
        *(sender.group_send("g", {"type": "x", "n": n}) for n in range(1, 20)),
        return_exceptions=True,
    )
    assert all(isinstance(outcome, Exception) for outcome in failed), failed
    redis_server.start()  # same port, empty
    # The receiver's link reconnects and subscribes again by itself; the
    # sender's next calls go out as soon as Redis answers.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    got = [event["n"] for event in await drain(receiver, channel, quiet=0.1)]
    while 99 not in got and loop.time() < deadline:
        again = [sender.group_send("g", {"type": "x", "n": 99}) for _ in range(3)]
        if any(await asyncio.gather(*again, return_exceptions=True)):
            await asyncio.sleep(0.2)  # not back yet
        got += [event["n"] for event in await drain(receiver, channel, quiet=0.3)]
    assert got[0] == 0 and 99 in got, got
    assert not any(1 <= n < 20 for n in got)  # failed sends were not sent later


async def test_a_caller_that_stops_waiting_does_not_stop_the_others(layers):
    sender, receiver = layers
    channel = await receiver.new_channel()
    await receiver.group_add("g", channel)
    waiting = [
        asyncio.ensure_future(sender.group_send("g", {"type": "x", "n": n})) for n in range(50)
    ]
    waiting[10].cancel()  # before the sender ran: as a timed-out bus.send would
    outcomes = await asyncio.gather(*waiting, return_exceptions=True)
    assert isinstance(outcomes[10], asyncio.CancelledError)
    assert [o for i, o in enumerate(outcomes) if i != 10] == [None] * 49
    numbers = [event["n"] for event in await drain(receiver, channel)]
    assert [n for n in numbers if n != 10] == [n for n in range(50) if n != 10]
    await sender.group_send("g", {"type": "x", "n": 50})  # the sender still sends
    assert [event["n"] for event in await drain(receiver, channel)] == [50]
