"""
Provides the presence store: who is in a room, and whether online or away;
plus typing leases, which lapse by themselves.

(docs/architecture.md, "Why the modules are as they are")
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from .present import Present

ONLINE = "online"
AWAY = "away"
STATUSES = (ONLINE, AWAY)


@dataclass(frozen=True)
class Change:
    """One user's transition in one room: joined, left or changed status."""

    room_id: int
    user_id: int
    username: str
    status: str | None  # None when the user left
    room_slug: str = ""


@dataclass(frozen=True)
class Departure:
    """What closing one connection caused: leaves (or status changes) in the
    rooms it had not left yet, and whether it was the user's last connection."""

    changes: list[Change] = field(default_factory=list)
    offline: bool = False


@dataclass(frozen=True)
class TypingLapse:
    """A typist whose `is_typing: true` ran out with nobody left to say so."""

    room_id: int
    room_slug: str
    user_id: int
    username: str


@dataclass(frozen=True)
class Sweep:
    """What one sweep of expired leases caused, to be announced once."""

    changes: list[Change] = field(default_factory=list)
    offline_user_ids: list[int] = field(default_factory=list)
    typing_lapses: list[TypingLapse] = field(default_factory=list)


class PresenceStore(Protocol):
    """The interface both backends implement. `channel` names one connection."""

    async def connect(self, *, user_id: int, username: str, channel: str) -> None:
        """A connection of the user opened."""

    async def disconnect(self, *, user_id: int, channel: str) -> Departure:
        """The connection closed: drop it from every room it is still in."""

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
        """The connection joined the room, or set its status there."""

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
        """enter(), and members() just after it, in one step: a join's list
        holds the joiner and every change before it."""

    async def exit(self, *, room_id: int, user_id: int, channel: str) -> Change | None:
        """The connection left the room."""

    async def members(self, *, room_id: int) -> list[dict[str, Any]]:
        """`[{"user": {"id", "username"}, "status"}]`, ordered by username."""

    async def present(self, *, room_id: int) -> Present:
        """members() as the `joined` frame carries them."""

    async def typing_start(
        self, *, room_id: int, room_slug: str, user_id: int, username: str, ttl_seconds: float
    ) -> None:
        """The user types; unless refreshed or stopped it lapses after `ttl_seconds`."""

    async def typing_stop(
        self, *, room_id: int, room_slug: str, user_id: int, username: str
    ) -> bool:
        """End the typing lease; False if it had already ended (someone announced it)."""

    async def aclose(self) -> None:
        """Stop background work and close connections (tests, shutdown)."""


# What presence.backends gives a store, so that the stores depend on nothing
# above them: the process's upkeep loop, and the watch on a connection's task
# (both in presence.transitions / presence.upkeep, which announce).
Upkeep = Callable[[Any], Coroutine[Any, Any, None]]
Reaper = Callable[..., None]
