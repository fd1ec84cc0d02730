"""
Both presence store backends on their own: the in-process one, and the Redis
one against a real Redis (REALTIME_TEST_REDIS_URL, each test under its own key
prefix), including what only several processes can do to it: race, stall and
die.
"""

import asyncio
import json
import os
import signal
import time
import uuid

import pytest
import redis.asyncio as redis
from channels.layers import get_channel_layer

from django_realtime.bus import room_group
from django_realtime.conf import DEFAULTS
from presence import conf, transitions, upkeep
from presence.local import LocalPresenceStore
from presence.redis_store import RedisPresenceStore
from presence.store import Change, Departure
from tests.servers import RedisServer, free_port

REDIS_URL = os.environ["REALTIME_TEST_REDIS_URL"]


def redis_store(prefix: str, **kwargs) -> RedisPresenceStore:
    return RedisPresenceStore(url=REDIS_URL, prefix=prefix, **kwargs)


@pytest.fixture
def prefix() -> str:
    return f"test-presence-{uuid.uuid4().hex[:12]}:"


@pytest.fixture
async def raw(prefix):
    """A plain client on the same Redis, to look at the keys."""
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    yield client
    keys = [k async for k in client.scan_iter(f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture(params=["local", "redis"])
async def store(request, prefix):
    backend = LocalPresenceStore() if request.param == "local" else redis_store(prefix)
    yield backend
    await backend.aclose()


@pytest.fixture
async def two_processes(prefix):
    """Two Redis stores on one prefix: what two server processes share."""
    a, b = redis_store(prefix), redis_store(prefix)
    yield a, b
    await a.aclose()
    await b.aclose()


async def keys(raw, prefix) -> list[str]:
    return sorted([k async for k in raw.scan_iter(f"{prefix}*")])


def enter(room_id=1, user_id=7, username="alice", channel="c1", status="online", slug="general"):
    return {
        "room_id": room_id,
        "room_slug": slug,
        "user_id": user_id,
        "username": username,
        "channel": channel,
        "status": status,
    }


# --- semantics, both backends ----------------------------------------------------------


async def test_two_tabs_count_once_and_the_user_leaves_with_the_last(store):
    assert await store.enter(**enter(channel="tab1")) == Change(1, 7, "alice", "online", "general")
    assert await store.enter(**enter(channel="tab2")) is None
    assert await store.members(room_id=1) == [
        {"user": {"id": 7, "username": "alice"}, "status": "online"}
    ]
    assert await store.exit(room_id=1, user_id=7, channel="tab1") is None
    assert await store.exit(room_id=1, user_id=7, channel="tab2") == Change(
        1, 7, "alice", None, "general"
    )
    assert await store.members(room_id=1) == []


async def test_away_only_when_every_tab_is_away_and_back_is_a_change(store):
    await store.enter(**enter(channel="tab1"))
    await store.enter(**enter(channel="tab2"))
    assert await store.enter(**enter(channel="tab1", status="away")) is None
    assert await store.enter(**enter(channel="tab2", status="away")) == Change(
        1, 7, "alice", "away", "general"
    )
    assert (await store.members(room_id=1))[0]["status"] == "away"
    assert await store.enter(**enter(channel="tab2", status="away")) is None  # no news
    assert await store.enter(**enter(channel="tab1")) == Change(1, 7, "alice", "online", "general")
    # the online tab leaving leaves the user away, which is news too
    assert await store.exit(room_id=1, user_id=7, channel="tab1") == Change(
        1, 7, "alice", "away", "general"
    )


async def test_members_lists_everyone_present_by_username(store):
    await store.enter(**enter(user_id=3, username="carol", channel="c3", status="away"))
    await store.enter(**enter(user_id=1, username="alice", channel="c1"))
    await store.enter(**enter(user_id=2, username="bob", channel="c2"))
    await store.enter(**enter(room_id=2, user_id=4, username="dave", channel="c4"))
    assert await store.members(room_id=1) == [
        {"user": {"id": 1, "username": "alice"}, "status": "online"},
        {"user": {"id": 2, "username": "bob"}, "status": "online"},
        {"user": {"id": 3, "username": "carol"}, "status": "away"},
    ]


async def test_a_join_enters_and_lists_the_room_as_it_is_just_after(store):
    """join() is enter() and members() in one step: the list holds the joiner
    and everyone before them, by username, as the `joined` frame's JSON too;
    a second tab is no change."""
    await store.enter(**enter(user_id=3, username='carol "c" ü', channel="c3", status="away"))
    await store.enter(**enter(room_id=2, user_id=4, username="dave", channel="c4"))
    change, present = await store.join(**enter(user_id=2, username="bob", channel="c2"))
    assert change == Change(1, 2, "bob", "online", "general")
    assert present.members() == [
        {"user": {"id": 2, "username": "bob"}, "status": "online"},
        {"user": {"id": 3, "username": 'carol "c" ü'}, "status": "away"},
    ]
    assert json.loads(present.json()) == present.members()
    assert await store.join(**enter(user_id=2, username="bob", channel="c2b")) == (None, present)
    assert await store.present(room_id=1) == present
    assert await store.members(room_id=1) == present.members()
    assert await store.exit(room_id=1, user_id=2, channel="c2") is None
    assert await store.exit(room_id=1, user_id=2, channel="c2b") == Change(
        1, 2, "bob", None, "general"
    )


async def test_disconnect_leaves_every_room_and_says_whether_it_was_the_last_connection(store):
    await store.connect(user_id=7, username="alice", channel="tab1")
    await store.connect(user_id=7, username="alice", channel="tab2")
    await store.enter(**enter(room_id=1, channel="tab1", slug="one"))
    await store.enter(**enter(room_id=2, channel="tab1", slug="two"))
    await store.enter(**enter(room_id=2, channel="tab2", slug="two"))
    first = await store.disconnect(user_id=7, channel="tab1")
    assert first == Departure(changes=[Change(1, 7, "alice", None, "one")], offline=False)
    last = await store.disconnect(user_id=7, channel="tab2")
    assert last == Departure(changes=[Change(2, 7, "alice", None, "two")], offline=True)
    assert await store.disconnect(user_id=7, channel="tab2") == Departure()  # said once


async def test_leaving_a_room_the_connection_is_not_in_changes_nothing(store):
    await store.enter(**enter(channel="tab1"))
    assert await store.exit(room_id=1, user_id=7, channel="other") is None
    assert await store.exit(room_id=9, user_id=7, channel="tab1") is None
    assert len(await store.members(room_id=1)) == 1


# --- Redis: several processes ------------------------------------------------------------


async def test_concurrent_joins_and_leaves_on_two_processes_are_announced_once(two_processes):
    """Twenty tabs of one user join at once through two processes: one join;
    they all leave at once: one leave."""
    a, b = two_processes
    tabs = [(a if i % 2 else b, f"tab{i}") for i in range(20)]
    joins = await asyncio.gather(*(s.enter(**enter(channel=ch)) for s, ch in tabs))
    assert [c for c in joins if c] == [Change(1, 7, "alice", "online", "general")]
    leaves = await asyncio.gather(*(s.exit(room_id=1, user_id=7, channel=ch) for s, ch in tabs))
    assert [c for c in leaves if c] == [Change(1, 7, "alice", None, "general")]
    assert await a.members(room_id=1) == await b.members(room_id=1) == []


async def test_connections_and_joins_made_at_once_go_in_one_call_each_join_listing_its_room(
    prefix, monkeypatch
):
    """A storm's connections, and its joins, on one process share a script
    call; each join still gets its own change, and the room as it was just
    after its own join."""
    from presence.redis_batches import Batch

    calls = []
    send = Batch._send

    async def counted(self, queued):
        calls.append((self.name, len(queued)))
        await send(self, queued)

    monkeypatch.setattr(Batch, "_send", counted)
    store = redis_store(prefix)
    try:
        users = [(1, "dave"), (2, "carol"), (3, "bob"), (4, "alice")]
        await asyncio.gather(
            *(store.connect(user_id=u, username=name, channel=f"c{u}") for u, name in users)
        )
        joined = await asyncio.gather(
            *(store.join(**enter(user_id=u, username=name, channel=f"c{u}")) for u, name in users)
        )
        assert calls == [("user_opens", 4), ("room_joins", 4)]
        assert [change for change, _ in joined] == [
            Change(1, u, name, "online", "general") for u, name in users
        ]
        assert [[m["user"]["username"] for m in p.members()] for _, p in joined] == [
            ["dave"],
            ["carol", "dave"],
            ["bob", "carol", "dave"],
            ["alice", "bob", "carol", "dave"],
        ]
    finally:
        await store.aclose()


async def test_one_process_sees_the_presence_another_process_wrote(two_processes):
    a, b = two_processes
    await a.enter(**enter(user_id=1, username="alice", channel="on-a"))
    await b.enter(**enter(user_id=2, username="bob", channel="on-b", status="away"))
    expected = [
        {"user": {"id": 1, "username": "alice"}, "status": "online"},
        {"user": {"id": 2, "username": "bob"}, "status": "away"},
    ]
    assert await a.members(room_id=1) == expected
    assert await b.members(room_id=1) == expected


async def test_an_expired_lease_is_swept_once_whoever_sweeps(two_processes, realtime):
    """A dead process's connection: its lease runs out and two live processes
    sweep at once; its leave and its user's going offline are reported once."""
    realtime.PRESENCE_TTL_SECONDS = 0.3
    a, b = two_processes
    await a.connect(user_id=7, username="alice", channel="dead")
    await a.enter(**enter(channel="dead"))
    await b.enter(**enter(user_id=8, username="bob", channel="alive"))
    await asyncio.sleep(0.5)
    await b.heartbeat()  # b is alive
    sweeps = await asyncio.gather(a.sweep(), b.sweep(), a.sweep(), b.sweep())
    assert [c for s in sweeps for c in s.changes] == [Change(1, 7, "alice", None, "general")]
    assert [u for s in sweeps for u in s.offline_user_ids] == [7]
    assert await b.members(room_id=1) == [
        {"user": {"id": 8, "username": "bob"}, "status": "online"}
    ]


async def test_heartbeats_keep_a_lease_alive_past_its_ttl(two_processes, realtime):
    realtime.PRESENCE_TTL_SECONDS = 0.4
    a, b = two_processes
    await a.enter(**enter(channel="tab"))
    deadline = time.monotonic() + 1.2  # three TTLs
    while time.monotonic() < deadline:
        assert await a.heartbeat() == []
        assert (await b.sweep()).changes == []
        await asyncio.sleep(0.1)
    assert len(await b.members(room_id=1)) == 1


async def test_a_lost_lease_is_registered_again_by_the_next_heartbeat(
    two_processes, raw, prefix, settings
):
    """Redis lost everything (restarted empty, or the process stalled past its
    TTL and was swept): the next heartbeat puts the connection back, as a join."""
    a, b = two_processes
    await a.connect(user_id=7, username="alice", channel="tab")
    await a.enter(**enter(channel="tab", status="away"))
    await raw.delete(*await keys(raw, prefix))
    assert await b.members(room_id=1) == []
    assert await a.heartbeat() == [Change(1, 7, "alice", "away", "general")]
    assert await b.members(room_id=1) == [
        {"user": {"id": 7, "username": "alice"}, "status": "away"}
    ]
    assert await a.heartbeat() == []  # and only once


async def test_a_heartbeat_in_several_calls_renews_every_lease_and_restores_only_the_lost(
    two_processes, raw, prefix, realtime, monkeypatch
):
    """Many rooms and users renewed a few at a time (BATCH 3 here: a room of
    five is split): every lease lives on past its TTL, and a lost one, in
    whichever call, comes back once, as a join."""
    monkeypatch.setattr("presence.redis_leases.BATCH", 3)
    realtime.PRESENCE_TTL_SECONDS = 0.5
    a, b = two_processes
    people = [(room_id, 10 * room_id + n) for room_id in (1, 2, 3) for n in range(5)]
    for room_id, user_id in people:
        channel = f"tab-{user_id}"
        await a.connect(user_id=user_id, username=f"u{user_id}", channel=channel)
        await a.enter(**enter(room_id, user_id, f"u{user_id}", channel, slug=f"room{room_id}"))
    room_key = a.room_key(2)
    await raw.zrem(f"{room_key}:leases", "tab-23")  # swept while the process stalled
    await raw.hdel(f"{room_key}:conns", "tab-23")
    await raw.hdel(room_key, "23")
    await raw.delete(f"{room_key}:user:23")
    assert await a.heartbeat() == [Change(2, 23, "u23", "online", "room2")]
    deadline = time.monotonic() + 1.5  # three TTLs
    while time.monotonic() < deadline:
        assert await a.heartbeat() == []
        assert (await b.sweep()).changes == []
        await asyncio.sleep(0.1)
    for room_id in (1, 2, 3):
        assert sorted(m["user"]["id"] for m in await b.members(room_id=room_id)) == [
            10 * room_id + n for n in range(5)
        ]


async def test_no_key_is_left_once_everyone_has_gone(two_processes, raw, prefix, realtime):
    realtime.PRESENCE_TTL_SECONDS = 0.3
    a, b = two_processes
    for i in range(5):
        await a.connect(user_id=i, username=f"u{i}", channel=f"a{i}")
        await a.enter(**enter(room_id=i % 2, user_id=i, username=f"u{i}", channel=f"a{i}"))
        await b.enter(**enter(room_id=i % 3, user_id=i, username=f"u{i}", channel=f"b{i}"))
    await a.typing_start(room_id=1, room_slug="g", user_id=1, username="u1", ttl_seconds=0.3)
    assert await keys(raw, prefix)
    for i in range(5):
        await a.exit(room_id=i % 2, user_id=i, channel=f"a{i}")
        await a.disconnect(user_id=i, channel=f"a{i}")
    await asyncio.sleep(0.5)  # b's connections die without a word
    await a.sweep()
    assert await keys(raw, prefix) == []


async def test_every_key_expires_by_itself_even_if_no_process_is_left(
    two_processes, raw, prefix, settings
):
    """The safety net for a Redis every process abandoned: each key carries an
    expiry of twice the TTL."""
    a, _ = two_processes
    await a.connect(user_id=7, username="alice", channel="tab")
    await a.enter(**enter(channel="tab"))
    await a.typing_start(room_id=1, room_slug="g", user_id=7, username="alice", ttl_seconds=6)
    ttl_ms = conf.ttl_seconds() * 1000
    for key in await keys(raw, prefix):
        assert 0 < await raw.pttl(key) <= 2 * ttl_ms, key


async def test_a_typing_lease_lapses_through_one_sweep(two_processes):
    """The typist's process died: a sweep elsewhere reports the lapse, once."""
    a, b = two_processes
    await a.typing_start(room_id=1, room_slug="g", user_id=7, username="alice", ttl_seconds=0.3)
    assert [s.typing_lapses for s in await asyncio.gather(a.sweep(), b.sweep())] == [[], []]
    await asyncio.sleep(0.45)
    sweeps = await asyncio.gather(a.sweep(), b.sweep())
    lapses = [lapse for s in sweeps for lapse in s.typing_lapses]
    assert [(x.room_id, x.room_slug, x.user_id, x.username) for x in lapses] == [
        (1, "g", 7, "alice")
    ]
    # the typist's own timer, had it fired late, would find it announced already
    assert await a.typing_stop(room_id=1, room_slug="g", user_id=7, username="alice") is False


async def test_typing_stopped_by_its_process_is_not_lapsed_again(two_processes):
    a, b = two_processes
    await a.typing_start(room_id=1, room_slug="g", user_id=7, username="alice", ttl_seconds=0.2)
    assert await a.typing_stop(room_id=1, room_slug="g", user_id=7, username="alice") is True
    await asyncio.sleep(0.3)
    assert (await b.sweep()).typing_lapses == []


async def test_the_upkeep_task_announces_a_dead_processs_leave_to_the_room(prefix, realtime):
    """What a server process runs: the upkeep of the live process sweeps the
    dead one's lease and sends the room a presence diff."""
    realtime.PRESENCE_TTL_SECONDS = 0.4
    realtime.PRESENCE_HEARTBEAT_SECONDS = 0.1
    realtime.PRESENCE_SWEEP_SECONDS = 0.1
    layer = get_channel_layer()
    listener = await layer.new_channel()
    await layer.group_add(room_group(4242), listener)
    dead = redis_store(prefix)
    live = RedisPresenceStore(url=REDIS_URL, prefix=prefix, upkeep=upkeep.run)  # as a server's
    try:
        await dead.enter(**enter(room_id=4242, user_id=1, username="ghost", channel="d"))
        await live.enter(**enter(room_id=4242, user_id=2, username="bob", channel="l"))
        event = await asyncio.wait_for(layer.receive(listener), 5)
        assert event["type"] == "presence.diff"
        assert event["payload"] == {
            "type": "presence",
            "room": "general",
            "joins": [],
            "leaves": [{"user": {"id": 1, "username": "ghost"}}],
        }
        # bob's own lease outlived several TTLs through the heartbeats
        await asyncio.sleep(0.8)
        assert await live.members(room_id=4242) == [
            {"user": {"id": 2, "username": "bob"}, "status": "online"}
        ]
    finally:
        await layer.group_discard(room_group(4242), listener)
        await live.aclose()
        await dead.aclose()


# --- Redis: faults ---------------------------------------------------------------------------


async def test_an_unreachable_redis_answers_no_change_within_the_timeout(realtime):
    realtime.PRESENCE_REDIS_TIMEOUT_SECONDS = 0.5
    nowhere = RedisPresenceStore(url=f"redis://127.0.0.1:{free_port()}/0", prefix="x:")
    started = time.monotonic()
    assert await nowhere.enter(**enter()) is None
    assert await nowhere.members(room_id=1) == []
    assert await nowhere.exit(room_id=1, user_id=7, channel="c1") is None
    assert await nowhere.disconnect(user_id=7, channel="c1") == Departure()
    assert await nowhere.typing_stop(room_id=1, room_slug="g", user_id=7, username="a") is True
    assert (await nowhere.sweep()).changes == []
    assert time.monotonic() - started < 6 * 0.5 + 1
    await nowhere.aclose()


async def test_a_hung_redis_holds_no_call_longer_than_the_timeout(realtime):
    """Redis frozen (SIGSTOP): every call gives up after its bound
    (PRESENCE_REDIS_TIMEOUT_SECONDS; a heartbeat, two thirds of
    PRESENCE_HEARTBEAT_SECONDS); once it thaws, presence works again."""
    realtime.PRESENCE_REDIS_TIMEOUT_SECONDS = 0.5
    realtime.PRESENCE_HEARTBEAT_SECONDS = 1.2  # the heartbeat's bound: 0.8 s
    server = RedisServer().start()
    store = RedisPresenceStore(url=server.url, prefix="p:")
    try:
        await store.enter(**enter(channel="before"))
        server.proc.send_signal(signal.SIGSTOP)
        for call in (
            store.enter(**enter(user_id=8, channel="during")),
            store.members(room_id=1),
            store.heartbeat(),
        ):
            started = time.monotonic()
            await call
            assert time.monotonic() - started < 1.0
        server.proc.send_signal(signal.SIGCONT)
        await asyncio.sleep(0.2)
        # the join that timed out is put back by the process's next heartbeat
        await store.heartbeat()
        members = await store.members(room_id=1)
        assert [m["user"]["id"] for m in members] == [7, 8]
    finally:
        server.proc.send_signal(signal.SIGCONT)
        await store.aclose()
        server.stop()


async def test_a_heartbeat_outlasts_a_stall_longer_than_the_call_timeout(realtime, caplog):
    """A process with thousands of connections refreshes them all in one
    heartbeat, read late by a busy loop: a 0.7 s stall fails a join
    (PRESENCE_REDIS_TIMEOUT_SECONDS 0.5) but not the heartbeat (1 s)."""
    realtime.PRESENCE_REDIS_TIMEOUT_SECONDS = 0.5
    realtime.PRESENCE_HEARTBEAT_SECONDS = 1.5
    server = RedisServer().start()
    store = RedisPresenceStore(url=server.url, prefix="p:")
    try:
        await store.enter(**enter(channel="before"))

        async def stall() -> None:
            server.proc.send_signal(signal.SIGSTOP)
            await asyncio.sleep(0.7)
            server.proc.send_signal(signal.SIGCONT)

        stalling = asyncio.create_task(stall())
        await asyncio.sleep(0.05)
        await store.heartbeat()
        await stalling
        assert "heartbeat failed" not in caplog.text
        stalling = asyncio.create_task(stall())
        await asyncio.sleep(0.05)
        await store.enter(**enter(user_id=8, channel="during"))
        await stalling
        assert "enter failed" in caplog.text or "join failed" in caplog.text
    finally:
        server.proc.send_signal(signal.SIGCONT)
        await store.aclose()
        server.stop()


# --- settings ---------------------------------------------------------------------------------


def test_the_defaults_end_a_dead_processs_presence_within_60_seconds():
    """The contract: a dead process's users leave within 60 s. The worst case
    is a lease refreshed just before the crash: TTL, then up to one sweep."""
    ttl = DEFAULTS["PRESENCE_TTL_SECONDS"]
    assert ttl + DEFAULTS["PRESENCE_SWEEP_SECONDS"] <= 60
    # a live connection survives two missed heartbeats
    assert 3 * DEFAULTS["PRESENCE_HEARTBEAT_SECONDS"] <= ttl


def test_settings_are_read_at_call_time_with_one_default(realtime):
    assert conf.ttl_seconds() == DEFAULTS["PRESENCE_TTL_SECONDS"]
    realtime.PRESENCE_TTL_SECONDS = 6
    assert conf.ttl_seconds() == 6.0


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("backend", ["local", "redis"])
async def test_a_connection_whose_consumer_died_without_disconnecting_is_ended_at_once(
    backend, prefix
):
    """A consumer killed by an exception never runs disconnect(): when the
    task that connected ends, the store ends the connection itself and the
    room is told (the reaper presence.backends gives each store)."""
    reap = transitions.reap_if_orphaned
    store = LocalPresenceStore(reap=reap) if backend == "local" else redis_store(prefix, reap=reap)
    layer = get_channel_layer()
    listener = await layer.new_channel()
    await layer.group_add(room_group(4343), listener)
    try:

        async def consumer() -> None:
            await store.connect(user_id=7, username="alice", channel="crashed")
            await store.enter(**enter(room_id=4343, channel="crashed"))
            raise RuntimeError("Attempt to send on a closed protocol")

        await store.enter(**enter(room_id=4343, user_id=8, username="bob", channel="alive"))
        with pytest.raises(RuntimeError):
            await asyncio.create_task(consumer())
        event = await asyncio.wait_for(layer.receive(listener), 5)
        assert event["payload"]["leaves"] == [{"user": {"id": 7, "username": "alice"}}]
        assert [m["user"]["username"] for m in await store.members(room_id=4343)] == ["bob"]
    finally:
        await layer.group_discard(room_group(4343), listener)
        await store.aclose()
