"""
Provides Leases, the base of the Redis presence store: where its keys are,
what the process knows of its own connections, and their leases: one per
connection (on its user) and one per room it is in, registered by a script
each, all renewed by one heartbeat, and registered again when Redis lost
them. Why leases: docs/architecture.md, "presence.redis_store".
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from django_realtime import redisconn

from . import conf
from .redis_batches import Batch
from .redis_shards import Client, Shards
from .store import Change

logger = logging.getLogger(__name__)

# Leases one script call refreshes or sweeps: enough that a process with
# thousands of connections needs a handful of calls, few enough that no call
# holds Redis for more than a few milliseconds.
BATCH = 500


@dataclass
class Connection:
    """What this process knows of one of its connections, to refresh or restore it."""

    user_id: int
    username: str
    rooms: dict[int, tuple[str, str]] = field(default_factory=dict)  # room id -> (slug, status)
    # Serialises the consumer's calls for this connection with a heartbeat
    # restoring it, so a restore never resurrects a connection that just left.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The task serving the connection (its consumer's), once connect() said so.
    task: asyncio.Task | None = None


def changes_of(flat: list[Any]) -> list[Change]:
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


def heartbeat_calls(
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


class Leases:
    """The keys, this process's connections, and their leases."""

    def __init__(self, *, url: str | Sequence[str], prefix: str) -> None:
        urls = url.split(",") if isinstance(url, str) else list(url)
        self.urls = [u.strip() for u in urls if u.strip()]
        self.url = self.urls[0]
        self.prefix = prefix
        self.shards = Shards(self.urls)
        self._connections: dict[str, Connection] = {}
        # Each shard's joins and opens, sent together, per event loop (as the clients).
        self._batches: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[tuple[int, str], Batch]
        ] = weakref.WeakKeyDictionary()

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

    def local_channels(self) -> list[str]:
        """This process's connections (for tests and the bench)."""
        return list(self._connections)

    # --- one lease at a time ----------------------------------------------------------
    def _ttl_ms(self) -> int:
        return int(conf.ttl_seconds() * 1000)

    async def _open(self, user_id: int, channel: str) -> None:
        shard = self.user_shard(user_id)
        await self.shards.call(
            "connect",
            shard,
            lambda c: self._batch(shard, c, "user_opens").put(
                self.user_key(user_id), [user_id, channel]
            ),
            None,
        )

    async def _join(
        self, entry: Connection, channel: str, room_id: int, slug: str, status: str
    ) -> list[Change]:
        return changes_of(await self._room_join(entry, channel, room_id, slug, status))

    async def _room_join(
        self,
        entry: Connection,
        channel: str,
        room_id: int,
        slug: str,
        status: str,
        *,
        listed: bool = False,
    ) -> Any:
        """The join's part of the ROOM_JOINS reply (presence.scripts), sent
        with the shard's other joins of this loop turn (presence.redis_batches);
        failed, no change (and, `listed`, an empty list)."""
        args = [room_id, slug, channel, entry.user_id, entry.username, status, int(listed)]
        shard = self.room_shard(room_id)
        return await self.shards.call(
            "join",
            shard,
            lambda c: self._batch(shard, c, "room_joins").put(self.room_key(room_id), args),
            [[], []] if listed else [],
        )

    def _batch(self, shard: int, client: Client, script: str) -> Batch:
        batches = self._batches.setdefault(asyncio.get_running_loop(), {})
        held = batches.get((shard, script))
        if held is None or held.client is not client:
            held = batches[(shard, script)] = Batch(client, script, self.due_key)
        return held

    async def _exit(self, room_id: int, channel: str) -> list[Any]:
        flat: list[Any] = await self.shards.call(
            "exit",
            self.room_shard(room_id),
            lambda c: c.run(
                "room_exit", keys=[self.room_key(room_id), self.due_key], args=[room_id, channel]
            ),
            [],
        )
        return flat

    # --- every lease of the process: called by presence.upkeep ------------------------
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

        def beat(shard: int) -> Callable[[Client], Awaitable[list[tuple[str, int, str]]]]:
            entries = [
                ("r", room_id, self.room_key(room_id), channels)
                for room_id, channels in rooms[shard].items()
            ] + [
                ("u", user_id, self.user_key(user_id), channels)
                for user_id, channels in users[shard].items()
            ]

            async def run(c: Client) -> list[tuple[str, int, str]]:
                # A call per BATCH channels, each awaited: the loop serves
                # its sockets between them however many connections there are.
                lost: list[tuple[str, int, str]] = []
                for keys, args in heartbeat_calls(entries):
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
                self.shards.call(
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
