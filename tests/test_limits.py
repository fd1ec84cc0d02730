"""The shared limits (django_realtime.limits) on a real Redis: two
limiters standing for two processes count one budget, a refund gives a hit
back, slots cap a user across processes and lapse when nobody renews them,
and a Redis that does not answer fails open to the process's own count."""

import asyncio
import os

import pytest
import redis

from django_realtime import limits, metrics
from django_realtime.errors import RateLimited
from tests.servers import free_port


@pytest.fixture
def shared(realtime):
    url = os.environ["REALTIME_TEST_REDIS_URL"]
    prefix = f"limit-test-{os.urandom(4).hex()}:"
    realtime.REDIS_URL = url
    realtime.LIMITS_REDIS_PREFIX = prefix
    yield url
    client = redis.Redis.from_url(url)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)


def hits(limiter, key, rate, n) -> int:
    taken = 0
    for _ in range(n):
        try:
            limiter.hit(key, rate)
            taken += 1
        except RateLimited:
            pass
    return taken


def test_two_processes_share_one_budget(shared):
    one, two = limits.SharedLimiter(), limits.SharedLimiter()
    assert hits(one, ("msg", 1), "5/10s", 3) == 3
    assert hits(two, ("msg", 1), "5/10s", 3) == 2
    with pytest.raises(RateLimited) as refused:
        one.hit(("msg", 1), "5/10s")
    assert 9 <= refused.value.retry_after_seconds <= 10
    assert hits(two, ("msg", 2), "5/10s", 1) == 1  # another key has its own


async def test_the_async_hit_and_a_refund_count_the_same(shared):
    one, two = limits.SharedLimiter(), limits.SharedLimiter()
    for _ in range(2):
        await one.ahit(("join", 7), "2/10s")
    with pytest.raises(RateLimited):
        await two.ahit(("join", 7), "2/10s")
    one.refund(("join", 7))  # from the event loop: sent without waiting
    for _ in range(50):
        try:
            await two.ahit(("join", 7), "2/10s")
            break
        except RateLimited:
            pass
    else:
        pytest.fail("the refund never arrived")


def test_a_redis_that_does_not_answer_fails_open_to_the_local_count(realtime):
    realtime.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens
    limiter = limits.SharedLimiter()
    before = metrics.LIMITS_FAIL_OPEN.labels("rate")._value.get()
    assert hits(limiter, ("msg", 1), "3/10s", 5) == 3  # the process's own count still holds
    assert metrics.LIMITS_FAIL_OPEN.labels("rate")._value.get() == before + 5


async def test_slots_cap_a_user_across_processes(shared):
    one, two = limits.Slots("ws"), limits.Slots("ws")
    assert await one.take(1, "a", 3)
    assert await two.take(1, "b", 3)
    assert await two.take(1, "c", 3)
    assert not await one.take(1, "d", 3)
    assert await one.take(2, "e", 3)  # another user
    await two.give_back(1, "b")
    assert await one.take(1, "d", 3)
    assert (one.held(1), two.held(1)) == (2, 1)


async def test_a_slot_nobody_renews_lapses(shared, monkeypatch):
    """A process that died without giving its slots back: they lapse."""
    monkeypatch.setattr(limits, "lease_seconds", lambda: 0.3)
    dead, alive = limits.Slots("ws"), limits.Slots("ws")
    assert await dead.take(1, "a", 1)
    assert not await alive.take(1, "b", 1)
    await asyncio.sleep(0.4)
    assert await alive.take(1, "b", 1)
    await alive.renew(1, "b")
    assert not await dead.take(1, "c", 1)


async def test_slots_renewed_together_all_live_on(shared, monkeypatch):
    """A refresh renews every slot of the process in a few pipelines
    (RENEW_BATCH 2 here, so three): each lives past its first lease, and a
    slot Redis lost is held again."""
    monkeypatch.setattr(limits, "lease_seconds", lambda: 0.4)
    monkeypatch.setattr(limits, "RENEW_BATCH", 2)
    mine, other = limits.Slots("ws"), limits.Slots("ws")
    held = [(user_id, f"tab-{user_id}") for user_id in range(1, 6)]
    for user_id, member in held:
        assert await mine.take(user_id, member, 1)
    redis.Redis.from_url(shared).delete(limits._key("ws", 5))  # Redis lost user 5's
    for _ in range(4):  # 0.6 s: past the first lease
        await asyncio.sleep(0.15)
        await mine.renew_many(held)
    assert not any([await other.take(user_id, "elsewhere", 1) for user_id in range(1, 6)])


async def test_renewing_together_fails_open(realtime):
    realtime.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    await limits.Slots("ws").renew_many([(1, "a"), (2, "b")])  # logged, not raised


async def test_slots_fail_open_to_the_local_count(realtime):
    realtime.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    slots = limits.Slots("sse")
    assert await slots.take(1, "a", 2)
    assert await slots.take(1, "b", 2)
    assert not await slots.take(1, "c", 2)
