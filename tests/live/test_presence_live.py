"""
Presence and typing as users see them, over real sockets, across real daphne
processes sharing one Redis: tabs that count once, away and back, a second
process's users, a process killed without a word, and last-seen times.
"""

import asyncio
import signal
import time

import pytest
from django.utils import timezone

from chat.models import Room
from presence.models import UserPresence

from .conftest import Ws

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

# Leases of 6 s refreshed every 2 s, swept every second: the production
# numbers (45 / 15 / 5) scaled down so a crash test takes seconds.
FAST_PRESENCE = {
    "PRESENCE_TTL_SECONDS": "6",
    "PRESENCE_HEARTBEAT_SECONDS": "2",
    "PRESENCE_SWEEP_SECONDS": "1",
}


@pytest.fixture
def people(make_user, token_for):
    """alice and bob with API tokens, and the public room general."""
    alice, bob = make_user("alice"), make_user("bob")
    Room.objects.create(slug="general", name="General")
    return {"alice": token_for(alice), "bob": token_for(bob), "users": (alice, bob)}


def listed(entries: list[dict]) -> dict[str, str]:
    return {e["user"]["username"]: e["status"] for e in entries}


def diff(frame: dict) -> tuple[dict[str, str], set[str]]:
    """A presence frame as ({joiner: status}, {leaver})."""
    return listed(frame["joins"]), {lv["user"]["username"] for lv in frame["leaves"]}


async def presence_frames(ws: Ws, seconds: float) -> list[dict]:
    return [f for f in await ws.quiet(seconds) if f["type"] == "presence"]


async def rest_presence(http, server, token, slug="general") -> dict[str, str]:
    def get() -> list[dict]:
        with http(server, token) as client:
            response = client.get(f"/api/rooms/{slug}/presence/")
            assert response.status_code == 200, response.text
            return response.json()

    return listed(await asyncio.to_thread(get))


async def last_seen(user) -> object:
    row = await UserPresence.objects.filter(user=user).afirst()
    return row.last_seen_at if row else None


async def wait_for_last_seen(user, timeout: float = 10.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = await last_seen(user)
        if seen is not None:
            return seen
        await asyncio.sleep(0.1)
    raise AssertionError(f"no last_seen_at for {user} within {timeout} s")


async def test_a_second_tab_counts_once_and_only_the_last_tab_closing_is_a_leave(
    server, people, http
):
    alice, _ = people["users"]
    bob = await Ws.connect(server.ws, token=people["bob"])
    await bob.join("general")
    tab1 = await Ws.connect(server.ws, token=people["alice"])
    joined = await tab1.join("general")
    assert listed(joined["presence"]) == {"alice": "online", "bob": "online"}
    assert diff(await bob.recv_type("presence")) == ({"alice": "online"}, set())
    assert await presence_frames(tab1, 0.5) == []  # the joiner is not told of itself

    tab2 = await Ws.connect(server.ws, token=people["alice"])
    joined = await tab2.join("general")
    assert listed(joined["presence"]) == {"alice": "online", "bob": "online"}
    await tab1.close()
    assert await presence_frames(bob, 1.0) == []  # a tab more or less is no news
    assert await rest_presence(http, server, people["bob"]) == {"alice": "online", "bob": "online"}
    assert await last_seen(alice) is None  # alice is still online

    before = timezone.now()
    await tab2.close()
    assert diff(await bob.recv_type("presence")) == ({}, {"alice"})
    seen = await wait_for_last_seen(alice)
    assert before <= seen <= timezone.now()
    assert await rest_presence(http, server, people["bob"]) == {"bob": "online"}
    await bob.close()


async def test_away_only_when_every_tab_says_so_and_back_again(server, people, http):
    bob = await Ws.connect(server.ws, token=people["bob"])
    await bob.join("general")
    tab1 = await Ws.connect(server.ws, token=people["alice"])
    tab2 = await Ws.connect(server.ws, token=people["alice"])
    await tab1.join("general")
    await tab2.join("general")
    assert diff(await bob.recv_type("presence")) == ({"alice": "online"}, set())

    await tab1.send({"type": "presence", "status": "away"})
    assert await presence_frames(bob, 1.0) == []  # tab2 is still online
    await tab2.send({"type": "presence", "status": "away"})
    assert diff(await bob.recv_type("presence")) == ({"alice": "away"}, set())
    assert (await rest_presence(http, server, people["bob"]))["alice"] == "away"
    late = await Ws.connect(server.ws, token=people["bob"])
    assert listed((await late.join("general"))["presence"])["alice"] == "away"

    await tab1.send({"type": "presence", "status": "online"})
    assert diff(await bob.recv_type("presence")) == ({"alice": "online"}, set())
    assert diff(await late.recv_type("presence")) == ({"alice": "online"}, set())
    assert (await rest_presence(http, server, people["bob"]))["alice"] == "online"
    for ws in (tab1, tab2, bob, late):
        await ws.close()


async def test_two_processes_share_presence_and_typing(server, server_b, people, http):
    """alice on one process, bob on another: each sees the other in `joined`,
    in diffs and in REST on either process, and bob's typing reaches alice
    and lapses once, 6 s after his last `true`."""
    alice = await Ws.connect(server.ws, token=people["alice"])
    await alice.join("general")
    bob = await Ws.connect(server_b.ws, token=people["bob"])
    joined = await bob.join("general")
    assert listed(joined["presence"]) == {"alice": "online", "bob": "online"}
    assert diff(await alice.recv_type("presence")) == ({"bob": "online"}, set())
    for process in (server, server_b):
        assert await rest_presence(http, process, people["alice"]) == listed(joined["presence"])

    await bob.send({"type": "typing", "room": "general", "is_typing": True})
    typing = await alice.recv_type("typing")
    assert (typing["user"]["username"], typing["is_typing"]) == ("bob", True)
    started = time.monotonic()
    lapse = await alice.recv_type("typing", timeout=10)
    assert (lapse["user"]["username"], lapse["is_typing"]) == ("bob", False)
    assert 5.5 <= time.monotonic() - started <= 8.5
    assert [f for f in await alice.quiet(1.5) if f["type"] == "typing"] == []  # once
    assert [f for f in await bob.quiet(0.2) if f["type"] == "typing"] == []  # never the typist

    await bob.send({"type": "presence", "status": "away"})
    assert diff(await alice.recv_type("presence")) == ({"bob": "away"}, set())
    await bob.close()
    assert diff(await alice.recv_type("presence")) == ({}, {"bob"})
    for process in (server, server_b):
        assert await rest_presence(http, process, people["alice"]) == {"alice": "online"}
    await alice.close()


async def test_a_killed_processs_users_leave_and_stop_typing_by_themselves(
    redis_server, daphnes, people, http
):
    """SIGKILL: no disconnect ever runs for alice. Her lease runs out and the
    surviving process announces her leave and the lapse of her typing, within
    TTL + sweep (7 s here; 45 + 5 = 50 s with the defaults, under the
    contract's 60 s), and records when she was last seen. bob's own presence,
    refreshed by heartbeats, outlives the TTL."""
    alice_user, _ = people["users"]
    survivor = daphnes(redis_url=redis_server.url, env=FAST_PRESENCE)
    victim = daphnes(redis_url=redis_server.url, env=FAST_PRESENCE)
    bob = await Ws.connect(survivor.ws, token=people["bob"])
    await bob.join("general")
    alice = await Ws.connect(victim.ws, token=people["alice"])
    await alice.join("general")
    assert diff(await bob.recv_type("presence")) == ({"alice": "online"}, set())
    await alice.send({"type": "typing", "room": "general", "is_typing": True})
    assert (await bob.recv_type("typing"))["is_typing"] is True

    victim.signal(signal.SIGKILL)
    killed = time.monotonic()
    victim.wait_exit(10)
    lapse = await bob.recv_type("typing", timeout=20)
    assert (lapse["user"]["username"], lapse["is_typing"]) == ("alice", False)
    frame = await bob.recv_type("presence", timeout=20)
    elapsed = time.monotonic() - killed
    assert diff(frame) == ({}, {"alice"})
    assert elapsed <= 6 + 1 + 3, elapsed
    assert await rest_presence(http, survivor, people["bob"]) == {"bob": "online"}
    assert await wait_for_last_seen(alice_user) is not None

    # bob has outlived his own TTL; nobody was told he left
    await asyncio.sleep(max(0.0, 8 - (time.monotonic() - killed)))
    assert await rest_presence(http, survivor, people["bob"]) == {"bob": "online"}
    assert await presence_frames(bob, 0.5) == []
    assert (await bob.request({"type": "ping"}, "pong"))["type"] == "pong"
    await bob.close()


async def test_rest_can_list_members_who_are_not_here_with_their_last_seen_time(
    server, people, http
):
    alice_user, _ = people["users"]
    alice = await Ws.connect(server.ws, token=people["alice"])
    await alice.join("general")
    await alice.close()
    seen = await wait_for_last_seen(alice_user)
    bob = await Ws.connect(server.ws, token=people["bob"])
    await bob.join("general")

    def get() -> list[dict]:
        with http(server, people["bob"]) as client:
            return client.get("/api/rooms/general/presence/?offline=1").json()

    entries = await asyncio.to_thread(get)
    assert [(e["user"]["username"], e["status"]) for e in entries] == [
        ("bob", "online"),
        ("alice", "offline"),
    ]
    assert entries[1]["last_seen_at"] == seen.isoformat().replace("+00:00", "Z")
    await bob.close()
