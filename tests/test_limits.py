"""The shared limits (django_realtime.limits) on a real Redis: two
limiters standing for two processes count one budget, a refund gives a hit
back, slots cap a user across processes and lapse when nobody renews them,
and a Redis that does not answer fails open to the process's own count.
The throttles built on them: REST's, keyed by the client address as the
server sees it, and the demo's login form."""

import asyncio
import os
import re

import pytest
import redis
from django.test import Client
from rest_framework.test import APIClient

from django_realtime import limits, metrics, rest
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


# --- throttles keyed by address, counted across processes (contract §2) ------------------


@pytest.mark.parametrize(
    ("proxies", "forwarded", "address"),
    [
        (0, "", "10.0.0.9"),
        (0, "1.2.3.4", "10.0.0.9"),  # a client's own header moves nothing
        (1, "1.2.3.4", "1.2.3.4"),  # what the one proxy saw
        (1, "6.6.6.6, 1.2.3.4", "1.2.3.4"),  # a proxy that appends: the client's part ignored
        (2, "6.6.6.6, 1.2.3.4, 10.0.0.2", "1.2.3.4"),
        (1, "", "10.0.0.9"),  # no header: the socket's
    ],
)
def test_the_client_address_is_the_sockets_unless_proxies_are_trusted(
    realtime, proxies, forwarded, address
):
    realtime.TRUSTED_PROXY_COUNT = proxies
    meta = {"REMOTE_ADDR": "10.0.0.9", "HTTP_X_FORWARDED_FOR": forwarded}
    assert rest.client_address(meta) == address


def wrong_logins(n: int, *, forged: bool = True, address: str = "10.0.0.9") -> list:
    client = APIClient()
    return [
        client.post(
            "/api/auth/token/",
            {"username": "alice", "password": "wrong"},
            format="json",
            REMOTE_ADDR=address,
            **({"HTTP_X_FORWARDED_FOR": f"203.0.113.{i}"} if forged else {}),
        )
        for i in range(n)
    ]


def test_token_logins_with_forged_forwarded_for_reach_the_throttle(db, realtime, make_user):
    make_user("alice")
    realtime.API_LOGIN_RATE = "3/min"
    responses = wrong_logins(5)
    assert [r.status_code for r in responses] == [400, 400, 400, 429, 429]
    assert responses[-1].json()["code"] == "RATE_LIMITED"
    assert 1 <= int(responses[-1]["Retry-After"]) <= 60
    assert wrong_logins(1, address="10.0.0.10")[0].status_code == 400  # another address


def test_behind_a_trusted_proxy_the_forwarded_address_counts(db, realtime, make_user):
    make_user("alice")
    realtime.API_LOGIN_RATE = "3/min"
    realtime.TRUSTED_PROXY_COUNT = 1
    assert [r.status_code for r in wrong_logins(5)] == [400] * 5


def test_token_logins_count_in_redis_across_processes(db, shared, realtime, make_user):
    make_user("alice")
    realtime.API_LOGIN_RATE = "4/min"
    assert [r.status_code for r in wrong_logins(2)] == [400, 400]
    limits.limiter.local._hits.clear()  # another process: nothing counted in it
    assert [r.status_code for r in wrong_logins(3)] == [400, 400, 429]


def test_the_user_throttle_counts_in_redis_across_processes(db, shared, realtime, make_user):
    alice = make_user("alice")
    realtime.API_USER_RATE = "2/min"
    client = APIClient()
    client.force_authenticate(alice)
    assert client.get("/api/notifications/unread-count/").status_code == 200
    limits.limiter.local._hits.clear()
    assert client.get("/api/notifications/unread-count/").status_code == 200
    refused = client.get("/api/notifications/unread-count/")
    assert refused.status_code == 429 and int(refused["Retry-After"]) >= 1


# --- the demo's login form --------------------------------------------------------------


def form_login(
    client: Client, password: str, *, username: str = "alice", address: str = "10.0.0.9"
):
    return client.post(
        "/accounts/login/",
        {"username": username, "password": password},
        REMOTE_ADDR=address,
        HTTP_X_FORWARDED_FOR=f"203.0.113.{os.urandom(1)[0]}",
    )


def test_the_login_form_throttles_failed_attempts_with_a_clear_message(db, realtime, make_user):
    make_user("alice", password="right")
    realtime.LOGIN_FORM_RATE = "3/min"
    client = Client()
    assert [form_login(client, "wrong").status_code for _ in range(3)] == [200] * 3
    refused = form_login(client, "right")  # the right password, while throttled
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    text = refused.content.decode()
    assert re.search(r"Too many failed attempts; try again in \d+ s", text), text
    assert 'name="password"' in text  # the form, shown again
    assert "_auth_user_id" not in client.session
    other = Client()
    assert form_login(other, "right", address="10.0.0.10").status_code == 302  # another address


def test_a_successful_login_does_not_count(db, realtime, make_user):
    make_user("alice", password="right")
    realtime.LOGIN_FORM_RATE = "2/min"
    for _ in range(4):
        assert form_login(Client(), "right").status_code == 302


def test_one_account_tried_from_many_addresses_is_throttled(db, realtime, make_user):
    make_user("alice", password="right")
    realtime.LOGIN_FORM_USERNAME_RATE = "3/hour"
    codes = [form_login(Client(), "wrong", address=f"10.0.1.{i}").status_code for i in range(3)]
    assert codes == [200] * 3
    assert form_login(Client(), "right", address="10.0.1.99").status_code == 429
    assert form_login(Client(), "right", username="bob", address="10.0.1.99").status_code == 200
