"""
Provides the presence store: who is in a room, and whether online or away.

A user is present while at least one of their connections has joined the room
(several tabs count once); they are `away` only when every such connection
said so. Every method returns the transitions it caused, so callers broadcast
diffs and never the heartbeat-level churn beneath them.

This backend keeps the state in the process. It is exact for the embedded
one-process default; several processes need a shared backend.
"""

import threading
from dataclasses import dataclass, field

ONLINE = "online"
AWAY = "away"
STATUSES = (ONLINE, AWAY)


@dataclass
class _UserInRoom:
    username: str
    connections: dict[str, str] = field(default_factory=dict)  # channel name -> status

    @property
    def status(self) -> str:
        return ONLINE if ONLINE in self.connections.values() else AWAY


@dataclass(frozen=True)
class Change:
    """One user's transition in one room: joined, left or changed status."""

    room_id: int
    user_id: int
    username: str
    status: str | None  # None when the user left


class LocalPresenceStore:
    def __init__(self) -> None:
        self._rooms: dict[int, dict[int, _UserInRoom]] = {}
        self._lock = threading.Lock()

    def enter(
        self, *, room_id: int, user_id: int, username: str, channel: str, status: str
    ) -> Change | None:
        with self._lock:
            users = self._rooms.setdefault(room_id, {})
            entry = users.get(user_id)
            before = entry.status if entry else None
            if entry is None:
                entry = users[user_id] = _UserInRoom(username=username)
            entry.connections[channel] = status
            after = entry.status
        return None if before == after else Change(room_id, user_id, username, after)

    def exit(self, *, room_id: int, user_id: int, channel: str) -> Change | None:
        with self._lock:
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
                return Change(room_id, user_id, entry.username, None)
            after = entry.status
        return None if before == after else Change(room_id, user_id, entry.username, after)

    def set_status(
        self, *, room_ids: list[int], user_id: int, username: str, channel: str, status: str
    ) -> list[Change]:
        changes = []
        for room_id in room_ids:
            change = self.enter(
                room_id=room_id, user_id=user_id, username=username, channel=channel, status=status
            )
            if change is not None:
                changes.append(change)
        return changes

    def members(self, *, room_id: int) -> list[dict]:
        with self._lock:
            users = dict(self._rooms.get(room_id, {}))
            return [
                {"user": {"id": uid, "username": e.username}, "status": e.status}
                for uid, e in sorted(users.items(), key=lambda kv: kv[1].username)
            ]


store = LocalPresenceStore()
