"""
Provides RedisPresenceStore, the presence store shared by every process on
one Redis or several shards: the interface of presence.store.PresenceStore
over leases (presence.redis_leases) a per-process upkeep renews in one
pipeline and sweeps (presence.redis_sweep), typing leases
(presence.redis_typing), transitions computed in Lua (presence.scripts),
every call bounded and a failure answered "no change" until the next
heartbeat repairs it (presence.redis_shards). Why: docs/architecture.md,
"presence.redis_store".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from .present import Present
from .redis_leases import Connection, changes_of
from .redis_sweep import Sweeping
from .redis_typing import TypingLeases
from .store import Change, Departure, Reaper, Upkeep

__all__ = ["RedisPresenceStore"]


class RedisPresenceStore(TypingLeases, Sweeping):
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
        super().__init__(url=url, prefix=prefix)
        self.upkeep = upkeep
        self.reap = reap
        self._upkeep: asyncio.Task | None = None

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
            offline = await self.shards.call(
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
            changes=[c for flat in exits for c in changes_of(flat)], offline=bool(offline)
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

    async def join(
        self,
        *,
        room_id: int,
        room_slug: str,
        user_id: int,
        username: str,
        channel: str,
        status: str,
    ) -> tuple[Change | None, Present]:
        """enter(), and the room's members after it: one script."""
        entry = self._entry(channel, user_id, username)
        entry.rooms[room_id] = (room_slug, status)
        self._ensure_upkeep()
        async with entry.lock:
            flat, listed = await self._room_join(
                entry, channel, room_id, room_slug, status, listed=True
            )
        changes = changes_of(flat)
        return (changes[0] if changes else None), Present.from_list(listed)

    async def exit(self, *, room_id: int, user_id: int, channel: str) -> Change | None:
        entry = self._connections.get(channel)
        if entry is not None:
            entry.rooms.pop(room_id, None)
        async with entry.lock if entry else contextlib.nullcontext():
            flat = await self._exit(room_id, channel)
        changes = changes_of(flat)
        return changes[0] if changes else None

    async def members(self, *, room_id: int) -> list[dict[str, Any]]:
        return (await self.present(room_id=room_id)).members()

    async def present(self, *, room_id: int) -> Present:
        listed: dict[Any, Any] = await self.shards.call(
            "members",
            self.room_shard(room_id),
            lambda c: c.batch.call("HGETALL", self.room_key(room_id)),
            {},
        )
        return Present.from_pairs(listed.items())

    async def aclose(self) -> None:
        task, self._upkeep = self._upkeep, None
        if task is not None and not task.done():
            task.cancel()
            if task.get_loop() is asyncio.get_running_loop():
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.shards.aclose()

    def _entry(self, channel: str, user_id: int, username: str) -> Connection:
        entry = self._connections.get(channel)
        if entry is None:
            entry = self._connections[channel] = Connection(user_id, username)
        return entry

    def _ensure_upkeep(self) -> None:
        if self.upkeep is None:
            return
        loop = asyncio.get_running_loop()
        task = self._upkeep
        if task is not None and not task.done() and task.get_loop() is loop:
            return
        self._upkeep = loop.create_task(self.upkeep(self), name="presence-upkeep")
