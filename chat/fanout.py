"""
Provides the room fan-out: one layer subscription per room per process, and
a message serialised once and handed to each member connection of the
process directly; the layer stays a doorbell (a lost event costs latency, a
seq gap is filled from the database). Why: docs/architecture.md,
"chat.fanout".
"""

import asyncio
import json
import logging
import time
from typing import Any, Protocol

from django_realtime import bus, metrics
from django_realtime.asyncdb import db
from django_realtime.conf import realtime_settings
from django_realtime.errors import Unavailable
from django_realtime.hubs import LoopHub
from django_realtime.limits import Slots

from . import events, selectors

logger = logging.getLogger(__name__)

# The fan-out's channel takes every room event of the process; an in-memory or
# core Redis layer drops what is over a channel's capacity, so it gets more.
CHANNEL_PREFIX = "fanout"
# Room slugs a process keeps the ids of (RoomFanout.room_ids).
ROOM_IDS_KEPT = 10_000

# The WebSocket connections (/ws/ and documents) each user has open, across
# processes (WS_MAX_CONNECTIONS_PER_USER): taken at connect, renewed by the
# refresh, given back at the end.
open_connections = Slots("ws")


class Member(Protocol):
    """What the fan-out needs of a connection (RealtimeConsumer)."""

    channel_name: str
    counted_user: int | None  # whose slot of open_connections it holds, if any

    def fanout_message_now(self, room_id: int, seq: int, text: str) -> bool | None: ...

    async def fanout_message(self, room_id: int, seq: int, payload: dict, text: str) -> bool: ...

    async def fanout_event(self, event: dict) -> None: ...

    async def refresh_user_group(self) -> bool: ...

    def catch_up(self, room_id: int, last_seq: int) -> None: ...


class RoomFanout(LoopHub):
    """The rooms this process's connections joined, and who joined each."""

    CHANNEL_PREFIX = CHANNEL_PREFIX

    def __init__(self) -> None:
        super().__init__()
        self.members: dict[int, set[Member]] = {}
        self.connections: set[Member] = set()  # every connection, in a room or not
        # room id -> (layer epoch, loop time) of its last successful group_add
        self.added: dict[int, tuple[int, float]] = {}
        self.locks: dict[int, asyncio.Lock] = {}
        # slug -> room id of rooms joined here, so that a join can subscribe
        # before its statement (RealtimeConsumer.on_join); a hint, checked by
        # the join's own answer.
        self.room_ids: dict[str, int] = {}

    def known(self, slug: str) -> int | None:
        return self.room_ids.get(slug)

    def forget(self, slug: str) -> None:
        self.room_ids.pop(slug, None)

    def know(self, slug: str, room_id: int) -> None:
        if self.room_ids.get(slug) != room_id:
            if len(self.room_ids) >= ROOM_IDS_KEPT:
                self.room_ids.clear()  # a rare full restart beats a bookkeeping cost per join
            self.room_ids[slug] = room_id

    # --- membership ----------------------------------------------------------------
    def register(self, connection: Member) -> None:
        """A connection of this process, refreshed with the others."""
        self.connections.add(connection)
        self.keep("refresh", self._refresh_loop)

    def unregister(self, connection: Member) -> None:
        self.connections.discard(connection)

    async def subscribe(self, room_id: int, member: Member) -> bool:
        """Add a member; True once the process is subscribed to the room's events
        (False when the layer failed: the member's refresher retries)."""
        self.members.setdefault(room_id, set()).add(member)
        await self.start()
        return await self.ensure(room_id)

    async def unsubscribe(self, room_id: int, member: Member) -> None:
        """Remove a member; the last one out ends the process's subscription."""
        members = self.members.get(room_id)
        if members is None:
            return
        members.discard(member)
        if members:
            return
        async with self._lock(room_id):
            if self.members.get(room_id):
                return  # someone joined while we waited
            self.members.pop(room_id, None)
            self.added.pop(room_id, None)
            self.locks.pop(room_id, None)
            await self.inbox.leave(bus.room_group(room_id))

    async def ensure(self, room_id: int, *, max_age: float | None = None) -> bool:
        """Make sure the room's group has this process's channel: added in the
        layer's current epoch (a restarted Redis forgot it), and, with max_age,
        no longer than that ago (memberships expire in the core layer)."""
        async with self._lock(room_id):
            if room_id not in self.members:
                return True  # everyone left meanwhile
            epoch = bus.epoch()
            now = asyncio.get_running_loop().time()
            added = self.added.get(room_id)
            if added is not None and added[0] == epoch:
                if max_age is None or now - added[1] < max_age:
                    return True
            if not await self.inbox.join(bus.room_group(room_id)):
                return False
            self.added[room_id] = (epoch, now)
            return True

    def _lock(self, room_id: int) -> asyncio.Lock:
        lock = self.locks.get(room_id)
        if lock is None:
            lock = self.locks[room_id] = asyncio.Lock()
        return lock

    # --- refreshing -----------------------------------------------------------------
    async def refresh(self, *, everything: bool = True) -> bool:
        """Re-add the process's layer groups, then catch every connection up
        from the database (one query for all the rooms): what the layer lost
        while Redis was away, or dropped, arrives now. False when the layer or
        the database failed; the loop tries again. Not `everything`: only the
        rooms whose add failed are added again."""
        if not everything:
            return all([await self.ensure(room_id) for room_id in list(self.members)])
        max_age = realtime_settings.GROUP_REFRESH_SECONDS / 2
        added = [await self.ensure(room_id, max_age=max_age) for room_id in list(self.members)]
        connections = list(self.connections)
        await open_connections.renew_many(
            [(c.counted_user, c.channel_name) for c in connections if c.counted_user is not None]
        )
        added += [await connection.refresh_user_group() for connection in connections]
        if not all(added):
            return False
        if not self.members:
            return True
        try:
            last = await db(selectors.rooms_last_seq, room_ids=list(self.members))
        except Unavailable:
            return False
        for room_id, last_seq in last.items():
            for member in list(self.members.get(room_id, ())):
                member.catch_up(room_id, last_seq)
        return True

    # --- receiving -------------------------------------------------------------------
    async def dispatch(self, event: dict[str, Any]) -> None:
        """Hand one room event to every member connection of the process."""
        members = self.members.get(event.get("room_id", -1))
        if not members:
            return
        if event["type"] != events.MESSAGE:
            for member in list(members):
                await _guarded(member.fanout_event(event))
            return
        room_id, sent = event["room_id"], 0
        for payload in events.message_payloads(event):
            seq, text = payload["seq"], json.dumps(payload, ensure_ascii=False)
            for member in list(members):
                try:  # most connections take it at once: no coroutine each
                    done = member.fanout_message_now(room_id, seq, text)
                except Exception as exc:  # noqa: BLE001 - its socket just went
                    logger.debug("fan-out to a connection failed: %r", exc)
                    continue
                if done is None:
                    done = await _guarded(member.fanout_message(room_id, seq, payload, text))
                sent += bool(done)
        metrics.FRAMES_OUT.inc(sent)  # those held for a gap fill count when sent
        if "sent_at" in event:
            metrics.FANOUT_SECONDS.observe(max(0.0, time.time() - event["sent_at"]))

    handle = dispatch  # what the receive loop hands each event to


async def _guarded(delivery: Any) -> Any:
    """One connection's failure (its socket just went) is not the others'."""
    try:
        return await delivery
    except Exception as exc:  # noqa: BLE001
        logger.debug("fan-out to a connection failed: %r", exc)
        return None


def fanout() -> RoomFanout:
    """The running event loop's fan-out (one per server process)."""
    return RoomFanout.for_loop()
