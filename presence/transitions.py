"""
Provides what presence transitions set off, in one place for every source of
them (presence.tracking for connections, presence.upkeep's sweep, the
reaper): a diff frame to each room that changed, `is_typing: false` for
typists nobody else will stop, and the last-seen time of users who went
offline; and the end of a connection whose consumer died without
disconnecting. All best-effort: failures are logged, never raised.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import defaultdict
from collections.abc import Callable

from django_realtime.asyncdb import db
from django_realtime.background import spawn

from . import events, services
from .store import Change, Departure, PresenceStore, Sweep

logger = logging.getLogger(__name__)


async def announce(changes: list[Change]) -> None:
    """One presence diff per room, carrying every change in it."""
    by_room: dict[tuple[int, str], list[Change]] = defaultdict(list)
    for change in changes:
        by_room[(change.room_id, change.room_slug)].append(change)
    for (room_id, room_slug), room_changes in by_room.items():
        await events.broadcast_changes(room_id=room_id, room_slug=room_slug, changes=room_changes)


async def announce_departure(*, user_id: int, departure: Departure) -> None:
    await announce(departure.changes)
    if departure.offline:
        await record_last_seen([user_id])


async def announce_sweep(sweep: Sweep) -> None:
    await announce(sweep.changes)
    for lapse in sweep.typing_lapses:
        await events.broadcast_typing_lapse(lapse)
    await record_last_seen(sweep.offline_user_ids)


async def record_last_seen(user_ids: list[int]) -> None:
    """Record that the users went offline now: written at once when nothing
    is being written, else with the next write. One write at a time per
    event loop, each carrying every user that went offline meanwhile, so a
    storm of departures (every client of a server dropping at once) costs a
    few writes, not one per user."""
    if not user_ids:
        return
    loop = asyncio.get_running_loop()
    batch = _last_seen.get(loop)
    if batch is None:
        batch = _last_seen[loop] = _LastSeen()
    batch.pending.update(user_ids)
    if batch.writer is None:
        batch.writer = loop.create_task(batch.write())


class _LastSeen:
    """The users of one event loop waiting for their last-seen write."""

    def __init__(self) -> None:
        self.pending: set[int] = set()
        self.writer: asyncio.Task | None = None

    async def write(self) -> None:
        try:
            while self.pending:
                user_ids, self.pending = sorted(self.pending), set()
                try:
                    await db(services.last_seen_record, user_ids=user_ids)
                except Exception as exc:  # noqa: BLE001 - a missed last-seen time is not worth a crash
                    logger.warning("presence: recording last seen of %s failed: %r", user_ids, exc)
        finally:
            self.writer = None


_last_seen: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LastSeen] = (
    weakref.WeakKeyDictionary()
)


def reap_if_orphaned(
    store: PresenceStore, *, user_id: int, channel: str, is_open: Callable[[], bool]
) -> None:
    """Watch the current task, the connection's consumer: if it ends while the
    store still holds the connection, disconnect() never ran (the consumer died
    of an exception), so end the connection now and announce it, rather than
    leave the user present until the lease runs out, or forever in-process."""
    task = asyncio.current_task()
    if task is None:
        return

    def ended(_: asyncio.Task) -> None:
        if is_open():
            spawn(_reap(store, user_id=user_id, channel=channel))

    task.add_done_callback(ended)


async def _reap(store: PresenceStore, *, user_id: int, channel: str) -> None:
    logger.warning("presence: %s ended without disconnecting; ending it now", channel)
    departure = await store.disconnect(user_id=user_id, channel=channel)
    await announce_departure(user_id=user_id, departure=departure)
