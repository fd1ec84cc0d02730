"""
Provides presence as a connection sees it: the one entry for the WebSocket
consumer. Each call changes the store (presence.backends) and announces what
changed (presence.events, presence.transitions), so no caller ever touches
the store or the layer, or forgets to announce.

Typing is a lease in the store, so a typist whose process dies is stopped
by another process's sweep; `Typist` keeps one connection's lapse timers.
"""

from __future__ import annotations

import asyncio
from typing import Any

from django_realtime.payloads import user_payload

from . import events, transitions
from .backends import store
from .present import Present
from .store import STATUSES

__all__ = [
    "STATUSES",
    "Typist",
    "connect",
    "disconnect",
    "enter",
    "exit",
    "join",
    "members",
    "present",
]

TYPING_LAPSE_SECONDS = 6.0  # the contract: typing lapses 6 s after the last `true`


async def connect(*, user: Any, channel: str) -> None:
    """A connection of the user opened (the calling task is its consumer's: if
    it ends without disconnect(), the connection is ended for it)."""
    await store.connect(user_id=user.pk, username=user.get_username(), channel=channel)


async def disconnect(*, user: Any, channel: str) -> None:
    """The connection closed: it leaves every room it is still in."""
    departure = await store.disconnect(user_id=user.pk, channel=channel)
    await transitions.announce_departure(user_id=user.pk, departure=departure)


async def enter(
    *, room_id: int, room_slug: str, user: Any, channel: str, status: str, announce_self: bool
) -> None:
    """The connection joined the room or set its status there. With
    `announce_self` false the connection itself is not told of its own join
    (its `joined` frame lists it already)."""
    change = await store.enter(
        room_id=room_id,
        room_slug=room_slug,
        user_id=user.pk,
        username=user.get_username(),
        channel=channel,
        status=status,
    )
    if change is not None:
        await events.broadcast_changes(
            room_id=room_id,
            room_slug=room_slug,
            changes=[change],
            skip_channel=None if announce_self else channel,
        )


async def join(*, room_id: int, room_slug: str, user: Any, channel: str, status: str) -> Present:
    """The connection joined the room: enter() without telling it of its own
    join, and the room's members just after it, in the same step (the
    `joined` frame's list: every change after it comes as a diff)."""
    change, present = await store.join(
        room_id=room_id,
        room_slug=room_slug,
        user_id=user.pk,
        username=user.get_username(),
        channel=channel,
        status=status,
    )
    if change is not None:
        await events.broadcast_changes(
            room_id=room_id, room_slug=room_slug, changes=[change], skip_channel=channel
        )
    return present


async def exit(*, room_id: int, room_slug: str, user: Any, channel: str) -> None:
    """The connection left the room."""
    change = await store.exit(room_id=room_id, user_id=user.pk, channel=channel)
    if change is not None:
        await events.broadcast_changes(room_id=room_id, room_slug=room_slug, changes=[change])


async def members(*, room_id: int) -> list[dict[str, Any]]:
    """`[{"user", "status"}]` of the room, by username: the `joined` frame's list."""
    return await store.members(room_id=room_id)


async def present(*, room_id: int) -> Present:
    """members() as the `joined` frame carries them."""
    return await store.present(room_id=room_id)


class Typist:
    """One connection's `typing` in its rooms: each `true` starts (or renews) a
    lease that lapses TYPING_LAPSE_SECONDS later, announced by whoever sees
    it end first (this timer, or a sweep elsewhere if this process died)."""

    def __init__(self, user: Any):
        self.user = user
        self.lapses: dict[int, asyncio.Task] = {}

    async def typing(self, *, room_id: int, room_slug: str, is_typing: bool) -> None:
        self._cancel(room_id)
        who = self._who(room_id, room_slug)
        if is_typing:
            self.lapses[room_id] = asyncio.create_task(self._lapse(room_id, room_slug))
            await store.typing_start(**who, ttl_seconds=TYPING_LAPSE_SECONDS)
        else:
            await store.typing_stop(**who)
        await self._announce(room_id, room_slug, is_typing=is_typing)

    async def stop(self, *, room_id: int, room_slug: str) -> None:
        """Leaving the room: a running `true` ends with a `false`."""
        if self._cancel(room_id):
            await store.typing_stop(**self._who(room_id, room_slug))
            await self._announce(room_id, room_slug, is_typing=False)

    def cancel_all(self) -> None:
        for room_id in list(self.lapses):
            self._cancel(room_id)

    def _cancel(self, room_id: int) -> bool:
        task = self.lapses.pop(room_id, None)
        if task is None:
            return False
        if task is not asyncio.current_task():
            task.cancel()
        return True

    async def _lapse(self, room_id: int, room_slug: str) -> None:
        await asyncio.sleep(TYPING_LAPSE_SECONDS)
        self.lapses.pop(room_id, None)
        # False when a sweep in another process announced the lapse already
        # (this process stalled past the lease).
        if await store.typing_stop(**self._who(room_id, room_slug)):
            await self._announce(room_id, room_slug, is_typing=False)

    def _who(self, room_id: int, room_slug: str) -> dict[str, Any]:
        return {
            "room_id": room_id,
            "room_slug": room_slug,
            "user_id": self.user.pk,
            "username": self.user.get_username(),
        }

    async def _announce(self, room_id: int, room_slug: str, *, is_typing: bool) -> None:
        await events.broadcast_typing(
            room_id=room_id,
            room_slug=room_slug,
            user=user_payload(self.user),
            is_typing=is_typing,
        )
