"""
Provides LocalPresenceStore, the presence store kept in the process.

Exact for the embedded one-process default (REDIS_URL unset): every
connection is in this process, closes through it, and its typing lapses are
announced by its own consumer. Several processes need presence.redis_store.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from django_realtime.payloads import user_payload_of

from .present import Present, entry
from .store import AWAY, ONLINE, Change, Departure, Reaper


@dataclass
class _UserInRoom:
    username: str
    room_slug: str
    connections: dict[str, str] = field(default_factory=dict)  # channel name -> status

    @property
    def status(self) -> str:
        return ONLINE if ONLINE in self.connections.values() else AWAY


@dataclass
class _Connection:
    user_id: int
    rooms: set[int] = field(default_factory=set)
    watched: bool = False  # connect() watches the consumer's task


class LocalPresenceStore:
    """The in-process backend of presence.store.PresenceStore."""

    def __init__(self, *, reap: Reaper | None = None) -> None:
        """`reap(...)` watches each connection's task
        (presence.transitions.reap_if_orphaned), given by presence.backends."""
        self.reap = reap
        self._rooms: dict[int, dict[int, _UserInRoom]] = {}
        self._connections: dict[str, _Connection] = {}
        self._users: dict[int, set[str]] = {}  # user id -> their open channels
        # Sync views read members from other threads (async_to_sync).
        self._lock = threading.Lock()

    async def connect(self, *, user_id: int, username: str, channel: str) -> None:
        """Also ties the connection to the calling task, its consumer's."""
        with self._lock:
            connection = self._open(channel, user_id)
            watched, connection.watched = connection.watched, True
        if not watched and self.reap is not None:
            # A consumer that dies of an exception never calls disconnect();
            # nothing else would ever end its presence here.
            self.reap(
                self,
                user_id=user_id,
                channel=channel,
                is_open=lambda: self._connections.get(channel) is connection,
            )

    async def disconnect(self, *, user_id: int, channel: str) -> Departure:
        with self._lock:
            connection = self._connections.pop(channel, None)
            rooms = sorted(connection.rooms) if connection else []
            changes = [c for c in (self._exit(r, user_id, channel) for r in rooms) if c]
            channels = self._users.get(user_id)
            offline = False
            if channels is not None and channel in channels:
                channels.discard(channel)
                if not channels:
                    del self._users[user_id]
                    offline = True
        return Departure(changes=changes, offline=offline)

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
        with self._lock:
            self._open(channel, user_id).rooms.add(room_id)
            users = self._rooms.setdefault(room_id, {})
            entry = users.get(user_id)
            before = entry.status if entry else None
            if entry is None:
                entry = users[user_id] = _UserInRoom(username=username, room_slug=room_slug)
            entry.connections[channel] = status
            after = entry.status
        return None if before == after else Change(room_id, user_id, username, after, room_slug)

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
        change = await self.enter(
            room_id=room_id,
            room_slug=room_slug,
            user_id=user_id,
            username=username,
            channel=channel,
            status=status,
        )
        return change, await self.present(room_id=room_id)

    async def exit(self, *, room_id: int, user_id: int, channel: str) -> Change | None:
        with self._lock:
            connection = self._connections.get(channel)
            if connection is not None:
                connection.rooms.discard(room_id)
            return self._exit(room_id, user_id, channel)

    def _open(self, channel: str, user_id: int) -> _Connection:
        connection = self._connections.get(channel)
        if connection is None:
            connection = self._connections[channel] = _Connection(user_id=user_id)
            self._users.setdefault(user_id, set()).add(channel)
        return connection

    def _exit(self, room_id: int, user_id: int, channel: str) -> Change | None:
        users = self._rooms.get(room_id, {})
        entry = users.get(user_id)
        if entry is None or channel not in entry.connections:
            return None
        before = entry.status
        del entry.connections[channel]
        if not entry.connections:
            del users[user_id]
            if not users:
                self._rooms.pop(room_id, None)
            return Change(room_id, user_id, entry.username, None, entry.room_slug)
        after = entry.status
        if before == after:
            return None
        return Change(room_id, user_id, entry.username, after, entry.room_slug)

    async def members(self, *, room_id: int) -> list[dict[str, Any]]:
        with self._lock:
            users = sorted(self._rooms.get(room_id, {}).items(), key=lambda kv: kv[1].username)
            return [
                {"user": user_payload_of(uid, e.username), "status": e.status} for uid, e in users
            ]

    async def present(self, *, room_id: int) -> Present:
        with self._lock:
            users = self._rooms.get(room_id, {}).items()
            return Present([entry(uid, e.status, e.username) for uid, e in users])

    # The typist's own consumer announces the lapse; with one process there is
    # nobody else who could have to.
    async def typing_start(
        self, *, room_id: int, room_slug: str, user_id: int, username: str, ttl_seconds: float
    ) -> None:
        return None

    async def typing_stop(
        self, *, room_id: int, room_slug: str, user_id: int, username: str
    ) -> bool:
        return True

    async def aclose(self) -> None:
        return None
