"""
Provides RedisPresenceStore, the presence store shared by every process on
one Redis (REDIS_URL set).

Each connection holds a lease that expires PRESENCE_TTL_SECONDS after its
process last refreshed it. One upkeep task per process (presence.upkeep)
refreshes all of the process's leases in one pipeline every
PRESENCE_HEARTBEAT_SECONDS and sweeps everyone's expired leases every
PRESENCE_SWEEP_SECONDS, so the connections of a process that died without a
word end by themselves and their leaves are announced once. Transitions are
computed atomically in Lua (presence.scripts): of two processes, never both
announce the same join or leave.

Every call is bounded by PRESENCE_REDIS_TIMEOUT_SECONDS (a bounded pool
that waits no longer, and a deadline around the whole call), except the
heartbeat and the sweep, which get two thirds of a heartbeat period: one
heartbeat refreshes every connection of the process in one pipeline. A
failure is logged and answered with "no change"; the process still knows its
own connections, so the next heartbeat puts back whatever Redis lost, and a
lease whose removal failed expires by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.commands.core import AsyncScript

from . import conf, scripts
from .store import Change, Departure, Reaper, Sweep, TypingLapse, Upkeep

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Leases one script call refreshes or sweeps: enough that a process with
# thousands of connections needs a handful of calls, few enough that no call
# holds Redis for more than a few milliseconds.
BATCH = 500
# Sweep batches per sweep; what is left waits for the next sweep.
MAX_SWEEP_BATCHES = 20


@dataclass
class _Connection:
    """What this process knows of one of its connections, to refresh or restore it."""

    user_id: int
    username: str
    rooms: dict[int, tuple[str, str]] = field(default_factory=dict)  # room id -> (slug, status)
    # Serialises the consumer's calls for this connection with a heartbeat
    # restoring it, so a restore never resurrects a connection that just left.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The task serving the connection (its consumer's), once connect() said so.
    task: asyncio.Task | None = None


@dataclass
class _Client:
    redis: Redis
    scripts: dict[str, AsyncScript]


def _changes(flat: list[Any]) -> list[Change]:
    """Changes from a script's flat {rid, slug, uid, username, status}* list."""
    return [
        Change(
            room_id=int(flat[i]),
            user_id=int(flat[i + 2]),
            username=flat[i + 3],
            status=flat[i + 4] or None,
            room_slug=flat[i + 1],
        )
        for i in range(0, len(flat) - 4, 5)
    ]


def _typing_member(room_id: int, room_slug: str, user_id: int, username: str) -> str:
    return json.dumps([room_id, room_slug, user_id, username], separators=(",", ":"))


def _typing_lapse(member: str) -> TypingLapse | None:
    try:
        room_id, room_slug, user_id, username = json.loads(member)
        return TypingLapse(room_id, room_slug, user_id, username)
    except (ValueError, TypeError):
        return None


class RedisPresenceStore:
    """The Redis backend of presence.store.PresenceStore."""

    def __init__(
        self, *, url: str, prefix: str, upkeep: Upkeep | None = None, reap: Reaper | None = None
    ) -> None:
        """`upkeep(store)` runs once per process from the first connection (the
        heartbeat and sweep, presence.upkeep); `reap(...)` watches each
        connection's task (presence.transitions.reap_if_orphaned). Both are
        given by presence.backends; without them the store only stores."""
        self.url = url
        self.prefix = prefix
        self.upkeep = upkeep
        self.reap = reap
        self._connections: dict[str, _Connection] = {}
        # redis.asyncio connections belong to the loop that opened them.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Client] = (
            weakref.WeakKeyDictionary()
        )
        self._upkeep: asyncio.Task | None = None

    # --- the interface -----------------------------------------------------------
    async def connect(self, *, user_id: int, username: str, channel: str) -> None:
        """Also ties the connection to the calling task, its consumer's."""
        entry = self._entry(channel, user_id, username)
        if entry.task is None:
            entry.task = asyncio.current_task()
            # A consumer that dies of an exception never calls disconnect():
            # end its connection when its task ends. (Should that fail, the
            # heartbeat skips a connection whose task is done, and its lease
            # expires like a dead process's.)
            if self.reap is not None:
                self.reap(
                    self,
                    user_id=user_id,
                    channel=channel,
                    is_open=lambda: self._connections.get(channel) is entry,
                )
        self._ensure_upkeep()
        async with entry.lock:
            await self._join(entry, channel, rooms=[])

    async def disconnect(self, *, user_id: int, channel: str) -> Departure:
        entry = self._connections.pop(channel, None)
        async with entry.lock if entry else contextlib.nullcontext():
            result = await self._call(
                "disconnect",
                lambda c: c.scripts["disconnect"](args=[self.prefix, channel, user_id]),
                None,
            )
        if not result:
            return Departure()
        changes, offline = result
        return Departure(changes=_changes(changes), offline=bool(offline))

    async def enter(
        self,
        *,
        room_id: int,
        room_slug: str,
        user_id: int,
        username: str,
        channel: str,
        status: str,
    ) -> Change | None:
        entry = self._entry(channel, user_id, username)
        entry.rooms[room_id] = (room_slug, status)
        self._ensure_upkeep()
        async with entry.lock:
            changes = await self._join(entry, channel, rooms=[(room_id, room_slug, status)])
        return changes[0] if changes else None

    async def exit(self, *, room_id: int, user_id: int, channel: str) -> Change | None:
        entry = self._connections.get(channel)
        if entry is not None:
            entry.rooms.pop(room_id, None)
        async with entry.lock if entry else contextlib.nullcontext():
            flat: list[Any] = await self._call(
                "exit",
                lambda c: c.scripts["exit"](args=[self.prefix, channel, user_id, room_id]),
                [],
            )
        changes = _changes(flat)
        return changes[0] if changes else None

    async def members(self, *, room_id: int) -> list[dict[str, Any]]:
        listed: dict[Any, Any] = await self._call(
            "members", lambda c: c.redis.hgetall(f"{self.prefix}room:{room_id}"), {}
        )
        members = []
        for uid, value in listed.items():
            status, _, username = value.partition(":")
            members.append({"user": {"id": int(uid), "username": username}, "status": status})
        return sorted(members, key=lambda m: (m["user"]["username"], m["user"]["id"]))

    async def typing_start(
        self, *, room_id: int, room_slug: str, user_id: int, username: str, ttl_seconds: float
    ) -> None:
        member = _typing_member(room_id, room_slug, user_id, username)
        # Kept as long as presence keys at least: a sweep may come a few
        # seconds after the typing lapsed, and the key must still be there.
        keep_ms = 2 * max(int(ttl_seconds * 1000), self._ttl_ms())
        await self._call(
            "typing_start",
            lambda c: c.scripts["typing_start"](
                args=[self.prefix, member, int(ttl_seconds * 1000), keep_ms]
            ),
            None,
        )

    async def typing_stop(
        self, *, room_id: int, room_slug: str, user_id: int, username: str
    ) -> bool:
        member = _typing_member(room_id, room_slug, user_id, username)
        # If Redis does not answer, say it ended here: a second `false` is
        # harmless, a missing one leaves a typist shown forever.
        removed = await self._call(
            "typing_stop", lambda c: c.redis.zrem(f"{self.prefix}typing", member), 1
        )
        return bool(removed)

    async def aclose(self) -> None:
        task, self._upkeep = self._upkeep, None
        if task is not None and not task.done():
            task.cancel()
            if task.get_loop() is asyncio.get_running_loop():
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            with contextlib.suppress(Exception):
                await client.redis.aclose()

    # --- upkeep: called by presence.upkeep ----------------------------------------
    async def heartbeat(self) -> list[Change]:
        """Refresh every lease of this process in one pipeline; register again
        any connection whose lease was lost, returning the joins that causes."""
        for channel, entry in list(self._connections.items()):
            if entry.task is not None and entry.task.done():
                logger.warning("presence: %s ended without disconnecting", channel)
                self._connections.pop(channel, None)
        channels = list(self._connections)
        if not channels:
            return []
        ttl_ms = self._ttl_ms()

        async def beat(c: _Client) -> list[str]:
            pipe = c.redis.pipeline(transaction=False)
            for i in range(0, len(channels), BATCH):
                chunk = channels[i : i + BATCH]
                await c.scripts["heartbeat"](
                    args=[self.prefix, ttl_ms, 2 * ttl_ms, *chunk], client=pipe
                )
            return [ch for missing in await pipe.execute() for ch in missing]

        changes: list[Change] = []
        heartbeat: Awaitable[list[str]] = self._call(
            "heartbeat", beat, [], timeout=conf.upkeep_timeout_seconds()
        )
        for channel in await heartbeat:
            changes += await self._restore(channel)
        return changes

    async def sweep(self) -> Sweep:
        """End expired leases (any process's) and report what that changed, once."""
        result = Sweep()
        for _ in range(MAX_SWEEP_BATCHES):
            swept = await self._call(
                "sweep",
                lambda c: c.scripts["sweep"](args=[self.prefix, BATCH]),
                None,
                timeout=conf.upkeep_timeout_seconds(),
            )
            if not swept:
                break
            changes, offline, lapsed, expired = swept
            result.changes.extend(_changes(changes))
            result.offline_user_ids.extend(int(uid) for uid in offline)
            result.typing_lapses.extend(x for x in map(_typing_lapse, lapsed) if x)
            if int(expired) < BATCH and len(lapsed) < BATCH:
                break
        return result

    def local_channels(self) -> list[str]:
        """This process's connections (for tests and the bench)."""
        return list(self._connections)

    # --- helpers -------------------------------------------------------------------
    def _entry(self, channel: str, user_id: int, username: str) -> _Connection:
        entry = self._connections.get(channel)
        if entry is None:
            entry = self._connections[channel] = _Connection(user_id, username)
        return entry

    def _ttl_ms(self) -> int:
        return int(conf.ttl_seconds() * 1000)

    async def _join(
        self, entry: _Connection, channel: str, rooms: list[tuple[int, str, str]]
    ) -> list[Change]:
        ttl_ms = self._ttl_ms()
        args: list[Any] = [self.prefix, channel, entry.user_id, entry.username, ttl_ms]
        # Keys outlive the lease by a TTL: the safety net for an abandoned Redis.
        args.append(2 * ttl_ms)
        for room_id, slug, status in rooms:
            args += [room_id, slug, status]
        flat: list[Any] = await self._call("join", lambda c: c.scripts["join"](args=args), [])
        return _changes(flat)

    async def _restore(self, channel: str) -> list[Change]:
        entry = self._connections.get(channel)
        if entry is None:
            return []
        async with entry.lock:
            if self._connections.get(channel) is not entry:
                return []  # it closed meanwhile
            rooms = [(rid, slug, status) for rid, (slug, status) in entry.rooms.items()]
            logger.info("presence: lease of %s was lost; registering it again", channel)
            return await self._join(entry, channel, rooms=rooms)

    def _client(self) -> _Client:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            timeout = conf.redis_timeout_seconds()
            pool = BlockingConnectionPool.from_url(
                self.url,
                max_connections=conf.redis_max_connections(),
                timeout=timeout,  # wait this long for a free connection, no longer
                # Each call is bounded by _call; the socket allows the longest.
                socket_timeout=conf.upkeep_timeout_seconds(),
                socket_connect_timeout=timeout,
                health_check_interval=30,
                decode_responses=True,
            )
            redis = Redis.from_pool(pool)
            client = _Client(
                redis, {name: redis.register_script(src) for name, src in scripts.ALL.items()}
            )
            self._clients[loop] = client
        return client

    async def _call(
        self,
        what: str,
        fn: Callable[[_Client], Awaitable[T]],
        default: T,
        *,
        timeout: float | None = None,
    ) -> T:
        """One Redis call bounded by `timeout` (PRESENCE_REDIS_TIMEOUT_SECONDS
        unless given); a failure is logged and answered with `default`."""
        try:
            async with asyncio.timeout(timeout or conf.redis_timeout_seconds()):
                return await fn(self._client())
        except Exception as exc:  # noqa: BLE001 - presence never takes a consumer down
            logger.warning("presence: %s failed: %r", what, exc)
            return default

    def _ensure_upkeep(self) -> None:
        if self.upkeep is None:
            return
        loop = asyncio.get_running_loop()
        task = self._upkeep
        if task is not None and not task.done() and task.get_loop() is loop:
            return
        self._upkeep = loop.create_task(self.upkeep(self), name="presence-upkeep")
