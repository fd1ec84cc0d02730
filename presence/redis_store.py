"""
Provides RedisPresenceStore, the presence store shared by every process on
one Redis or several shards: leases a per-process upkeep renews in one
pipeline and sweeps, transitions computed in Lua (presence.scripts), every
call bounded and a failure answered "no change" until the next heartbeat
repairs it. Why: docs/architecture.md, "presence.redis_store".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.commands.core import AsyncScript

from django_realtime import redisconn
from django_realtime.payloads import user_payload_of

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


def _heartbeat_calls(
    entries: list[tuple[str, int, str, list[str]]],
) -> Iterator[tuple[list[str], list[Any]]]:
    """The heartbeat script's (keys, args) for (kind, id, key, channels)
    entries, at most about BATCH channels per call (a room with more is
    split over calls)."""
    keys: list[str] = []
    args: list[Any] = []
    held = 0
    for kind, ident, key, channels in entries:
        for i in range(0, len(channels), BATCH):
            part = channels[i : i + BATCH]
            if keys and held + len(part) > BATCH:
                yield keys, args
                keys, args, held = [], [], 0
            keys.append(key)
            args += [kind, ident, len(part), *part]
            held += len(part)
    if keys:
        yield keys, args


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
    # A connection's calls (open, join, exit, members, close) go out with
    # whatever else the process sends the shard meanwhile: one round trip
    # for a join storm's burst (redisconn.Batched).
    batch: redisconn.Batched

    async def run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self.batch.script(self.scripts[name], keys, args)


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


def _due_entry(member: str) -> tuple[str, int, str]:
    """('r' | 'u' | 't', room or user id, channel or typing member) of a due index entry."""
    kind, ident, rest = (member.split(":", 2) + ["", ""])[:3]
    try:
        return kind, int(ident), rest
    except ValueError:
        return "", 0, ""


def _typing_lapse(member: str) -> TypingLapse | None:
    try:
        room_id, room_slug, user_id, username = json.loads(member)
        return TypingLapse(room_id, room_slug, user_id, username)
    except (ValueError, TypeError):
        return None


class RedisPresenceStore:
    """The Redis backend of presence.store.PresenceStore."""

    def __init__(
        self,
        *,
        url: str | Sequence[str],
        prefix: str,
        upkeep: Upkeep | None = None,
        reap: Reaper | None = None,
    ) -> None:
        """`url`: one Redis URL, or the shards (a list, or URLs separated by
        commas). `upkeep(store)` runs once per process from the first
        connection (the heartbeat and sweep, presence.upkeep); `reap(...)`
        watches each connection's task (presence.transitions.reap_if_orphaned).
        Both are given by presence.backends; without them the store only stores."""
        urls = url.split(",") if isinstance(url, str) else list(url)
        self.urls = [u.strip() for u in urls if u.strip()]
        self.url = self.urls[0]
        self.prefix = prefix
        self.upkeep = upkeep
        self.reap = reap
        self._connections: dict[str, _Connection] = {}
        # redis.asyncio connections belong to the loop that opened them.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, _Client]] = (
            weakref.WeakKeyDictionary()
        )
        self._upkeep: asyncio.Task | None = None

    # --- where things are ----------------------------------------------------------
    def room_key(self, room_id: int) -> str:
        """The room's presence list; every key of the room starts with it."""
        return f"{self.prefix}{{room:{room_id}}}"

    def user_key(self, user_id: int) -> str:
        """Every key of the user's starts with it."""
        return f"{self.prefix}{{user:{user_id}}}"

    @property
    def due_key(self) -> str:
        """The sweep index, one on each shard."""
        return f"{self.prefix}due"

    def room_shard(self, room_id: int) -> int:
        return redisconn.room_shard(room_id, len(self.urls))

    def user_shard(self, user_id: int) -> int:
        return redisconn.user_shard(user_id, len(self.urls))

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
            await self._open(entry.user_id, channel)

    async def disconnect(self, *, user_id: int, channel: str) -> Departure:
        entry = self._connections.pop(channel, None)
        async with entry.lock if entry else contextlib.nullcontext():
            rooms = list(entry.rooms) if entry else []
            exits = await asyncio.gather(*(self._exit(rid, channel) for rid in rooms))
            offline = await self._call(
                "disconnect",
                self.user_shard(user_id),
                lambda c: c.run(
                    "user_close",
                    keys=[self.user_key(user_id), self.due_key],
                    args=[user_id, channel],
                ),
                0,
            )
        return Departure(
            changes=[c for flat in exits for c in _changes(flat)], offline=bool(offline)
        )

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
            changes = await self._join(entry, channel, room_id, room_slug, status)
        return changes[0] if changes else None

    async def exit(self, *, room_id: int, user_id: int, channel: str) -> Change | None:
        entry = self._connections.get(channel)
        if entry is not None:
            entry.rooms.pop(room_id, None)
        async with entry.lock if entry else contextlib.nullcontext():
            flat = await self._exit(room_id, channel)
        changes = _changes(flat)
        return changes[0] if changes else None

    async def members(self, *, room_id: int) -> list[dict[str, Any]]:
        listed: dict[Any, Any] = await self._call(
            "members",
            self.room_shard(room_id),
            lambda c: c.batch.call("HGETALL", self.room_key(room_id)),
            {},
        )
        members = []
        for uid, value in listed.items():
            status, _, username = value.partition(":")
            members.append({"user": user_payload_of(int(uid), username), "status": status})
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
            self.room_shard(room_id),
            lambda c: c.scripts["typing_start"](
                keys=[self.room_key(room_id), self.due_key],
                args=[room_id, member, int(ttl_seconds * 1000), keep_ms],
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
            "typing_stop",
            self.room_shard(room_id),
            lambda c: c.scripts["typing_stop"](
                keys=[self.room_key(room_id), self.due_key], args=[room_id, member]
            ),
            1,
        )
        return bool(removed)

    async def aclose(self) -> None:
        task, self._upkeep = self._upkeep, None
        if task is not None and not task.done():
            task.cancel()
            if task.get_loop() is asyncio.get_running_loop():
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        clients = self._clients.pop(asyncio.get_running_loop(), {})
        for client in clients.values():
            with contextlib.suppress(Exception):
                await client.redis.aclose()

    # --- upkeep: called by presence.upkeep ----------------------------------------
    async def heartbeat(self) -> list[Change]:
        """Renew every lease of this process, one pipeline per shard; register
        again any lease that was lost (swept, or its shard restarted empty),
        returning the joins that causes."""
        for channel, entry in list(self._connections.items()):
            if entry.task is not None and entry.task.done():
                logger.warning("presence: %s ended without disconnecting", channel)
                self._connections.pop(channel, None)
        if not self._connections:
            return []
        # shard -> room id -> channels, and shard -> user id -> channels
        rooms: dict[int, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
        users: dict[int, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
        for channel, entry in self._connections.items():
            users[self.user_shard(entry.user_id)][entry.user_id].append(channel)
            for room_id in entry.rooms:
                rooms[self.room_shard(room_id)][room_id].append(channel)
        ttl_ms = self._ttl_ms()
        keep_ms = 2 * ttl_ms

        def beat(shard: int) -> Callable[[_Client], Awaitable[list[tuple[str, int, str]]]]:
            entries = [
                ("r", room_id, self.room_key(room_id), channels)
                for room_id, channels in rooms[shard].items()
            ] + [
                ("u", user_id, self.user_key(user_id), channels)
                for user_id, channels in users[shard].items()
            ]

            async def run(c: _Client) -> list[tuple[str, int, str]]:
                # A call per BATCH channels, each awaited: the loop serves
                # its sockets between them however many connections there are.
                lost: list[tuple[str, int, str]] = []
                for keys, args in _heartbeat_calls(entries):
                    flat = await c.scripts["heartbeat"](
                        keys=[self.due_key, *keys], args=[ttl_ms, keep_ms, *args]
                    )
                    lost += [
                        ("room" if flat[i] == "r" else "user", int(flat[i + 1]), flat[i + 2])
                        for i in range(0, len(flat), 3)
                    ]
                return lost

            return run

        shards = sorted(set(rooms) | set(users))
        nothing: list[tuple[str, int, str]] = []
        lost: list[list[tuple[str, int, str]]] = await asyncio.gather(
            *(
                self._call(
                    "heartbeat", shard, beat(shard), nothing, timeout=conf.upkeep_timeout_seconds()
                )
                for shard in shards
            )
        )
        missing: dict[str, set[tuple[str, int]]] = defaultdict(set)
        for kind, ident, channel in (item for shard_lost in lost for item in shard_lost):
            missing[channel].add((kind, ident))
        changes: list[Change] = []
        for channel, leases in missing.items():
            changes += await self._restore(channel, leases)
        return changes

    async def sweep(self) -> Sweep:
        """End expired leases (any process's) on every shard and report what
        that changed, once."""
        result = Sweep()
        for swept in await asyncio.gather(*(self._sweep_shard(i) for i in range(len(self.urls)))):
            result.changes.extend(swept.changes)
            result.offline_user_ids.extend(swept.offline_user_ids)
            result.typing_lapses.extend(swept.typing_lapses)
        return result

    async def _sweep_shard(self, shard: int) -> Sweep:
        result = Sweep()
        timeout = conf.upkeep_timeout_seconds()
        for _ in range(MAX_SWEEP_BATCHES):
            due: list[str] = await self._call(
                "sweep",
                shard,
                lambda c: c.scripts["due"](keys=[self.due_key], args=[BATCH]),
                [],
                timeout=timeout,
            )
            if not due:
                break
            leases: dict[int, list[str]] = defaultdict(list)
            typists: dict[int, list[str]] = defaultdict(list)
            users: dict[int, list[str]] = defaultdict(list)
            for member in due:
                kind, ident, rest = _due_entry(member)
                if kind == "r":
                    leases[ident].append(rest)
                elif kind == "t":
                    typists[ident].append(rest)
                elif kind == "u":
                    users[ident].append(rest)

            async def end(
                c: _Client,
                leases: dict[int, list[str]] = leases,
                typists: dict[int, list[str]] = typists,
                users: dict[int, list[str]] = users,
            ) -> tuple[list[Any], list[int]]:
                pipe = c.redis.pipeline(transaction=False)
                room_ids = sorted(set(leases) | set(typists))
                for room_id in room_ids:
                    channels = leases.get(room_id, [])
                    await c.scripts["room_sweep"](
                        keys=[self.room_key(room_id), self.due_key],
                        args=[room_id, len(channels), *channels, *typists.get(room_id, [])],
                        client=pipe,
                    )
                user_ids = sorted(users)
                for user_id in user_ids:
                    await c.scripts["user_sweep"](
                        keys=[self.user_key(user_id), self.due_key],
                        args=[user_id, *users[user_id]],
                        client=pipe,
                    )
                replies = await pipe.execute()
                offline = [
                    u for u, gone in zip(user_ids, replies[len(room_ids) :], strict=True) if gone
                ]
                return replies[: len(room_ids)], offline

            ended: tuple[list[Any], list[int]] = await self._call(
                "sweep", shard, end, ([], []), timeout=timeout
            )
            for changes, lapsed in ended[0]:
                result.changes.extend(_changes(changes))
                result.typing_lapses.extend(x for x in map(_typing_lapse, lapsed) if x)
            result.offline_user_ids.extend(ended[1])
            if len(due) < BATCH:
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

    async def _open(self, user_id: int, channel: str) -> None:
        ttl_ms = self._ttl_ms()
        await self._call(
            "connect",
            self.user_shard(user_id),
            lambda c: c.run(
                "user_open",
                keys=[self.user_key(user_id), self.due_key],
                # Keys outlive the lease by a TTL: the safety net for an abandoned Redis.
                args=[user_id, channel, ttl_ms, 2 * ttl_ms],
            ),
            None,
        )

    async def _join(
        self, entry: _Connection, channel: str, room_id: int, slug: str, status: str
    ) -> list[Change]:
        ttl_ms = self._ttl_ms()
        args: list[str | int] = [
            room_id,
            slug,
            channel,
            entry.user_id,
            entry.username,
            status,
            ttl_ms,
            2 * ttl_ms,
        ]
        flat: list[Any] = await self._call(
            "join",
            self.room_shard(room_id),
            lambda c: c.run("room_join", keys=[self.room_key(room_id), self.due_key], args=args),
            [],
        )
        return _changes(flat)

    async def _exit(self, room_id: int, channel: str) -> list[Any]:
        flat: list[Any] = await self._call(
            "exit",
            self.room_shard(room_id),
            lambda c: c.run(
                "room_exit", keys=[self.room_key(room_id), self.due_key], args=[room_id, channel]
            ),
            [],
        )
        return flat

    async def _restore(self, channel: str, leases: set[tuple[str, int]]) -> list[Change]:
        entry = self._connections.get(channel)
        if entry is None:
            return []
        async with entry.lock:
            if self._connections.get(channel) is not entry:
                return []  # it closed meanwhile
            logger.info("presence: leases of %s were lost; registering them again", channel)
            changes: list[Change] = []
            if ("user", entry.user_id) in leases:
                await self._open(entry.user_id, channel)
            for kind, room_id in sorted(leases):
                held = entry.rooms.get(room_id) if kind == "room" else None
                if held is not None:
                    changes += await self._join(entry, channel, room_id, *held)
            return changes

    def _client(self, shard: int) -> _Client:
        loop = asyncio.get_running_loop()
        clients = self._clients.setdefault(loop, {})
        client = clients.get(shard)
        if client is None:
            timeout = conf.redis_timeout_seconds()
            pool = BlockingConnectionPool.from_url(
                self.urls[shard],
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
                redis,
                {name: redis.register_script(src) for name, src in scripts.ALL.items()},
                redisconn.batched(redis),
            )
            clients[shard] = client
        return client

    async def _call(
        self,
        what: str,
        shard: int,
        fn: Callable[[_Client], Awaitable[T]],
        default: T,
        *,
        timeout: float | None = None,
    ) -> T:
        """One Redis call on one shard, bounded by `timeout`
        (PRESENCE_REDIS_TIMEOUT_SECONDS unless given); a failure is logged and
        answered with `default`."""
        try:
            async with asyncio.timeout(timeout or conf.redis_timeout_seconds()):
                return await fn(self._client(shard))
        except Exception as exc:  # noqa: BLE001 - presence never takes a consumer down
            logger.warning("presence: %s failed on shard %d: %r", what, shard, exc)
            return default

    def _ensure_upkeep(self) -> None:
        if self.upkeep is None:
            return
        loop = asyncio.get_running_loop()
        task = self._upkeep
        if task is not None and not task.done() and task.get_loop() is loop:
            return
        self._upkeep = loop.create_task(self.upkeep(self), name="presence-upkeep")
