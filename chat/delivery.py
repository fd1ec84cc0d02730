"""
Provides RoomDelivery: a connection's side of the process's room fan-out
(chat.fanout): each joined room delivered in seq order through its
django_realtime.delivery cursor, under one delivery lock (FIFO), with the
events that came while the lock was held queued and delivered in order.
"""

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from django_realtime.background import spawn
from django_realtime.delivery import SeqCursor
from django_realtime.output import HeldOutput

from . import events, streams


@dataclass
class JoinedRoom:
    room_id: int
    slug: str
    cursor: SeqCursor


class RoomDelivery(HeldOutput):
    """A mixin for RealtimeConsumer: the fan-out's Member (chat.fanout)."""

    joined: dict[int, JoinedRoom]
    dispatch: Callable[[dict], Awaitable[None]]  # the consumer's
    send_frame: Callable[..., Awaitable[None]]  # the consumer's
    _replay: Callable[..., Coroutine[Any, Any, bool]]  # chat.replay's

    def start_delivery(self) -> None:
        """Nothing joined, queued or waiting yet (call once, in connect)."""
        # Room events that arrive while a join of that room is under way wait
        # here, and are delivered by seq once the join has sent its backlog.
        self.joining: dict[int, list[dict]] = {}
        # Room events that came while the delivery lock was held (a replay
        # waiting for the socket, a gap fill), delivered in order by one task.
        # A room's message doorbells collapse into its latest: delivering
        # that one fills what it skipped from the database, so a connection
        # that waits holds one entry per room, not one per message.
        self.queued: list[dict] = []
        self.queued_message: dict[int, int] = {}  # room id -> its message's index
        # Deliveries that had to wait for the lock (a gap fill, a join): tasks.
        self.waiting: set[asyncio.Task] = set()
        # Serialises delivery between the dispatch loop and the refresher task.
        self.delivery_lock = asyncio.Lock()

    # --- room events, from the process's fan-out -------------------------------------
    def fanout_message_now(self, room_id: int, seq: int, text: str) -> bool | None:
        """fanout_message without a coroutine, for the common case: True when
        sent (the next seq, nothing else being sent, the socket taking it at
        once), False when not for this connection; None: take fanout_message."""
        if self.closing:
            return False
        if room_id in self.joining:
            return None
        room = self.joined.get(room_id)
        if room is None:
            return False
        cursor = room.cursor
        if seq <= cursor.delivered:
            return False
        if seq == cursor.delivered + 1 and not self.delivery_lock.locked() and self.send_now(text):
            cursor.delivered = seq
            return True
        return None

    async def fanout_message(self, room_id: int, seq: int, payload: dict, text: str) -> bool:
        """A message stored in a joined room, serialised once for the process:
        sent at once when it is the next seq and nothing else is being sent
        (True; the fan-out counts those frames), else held or dropped by seq."""
        done = self.fanout_message_now(room_id, seq, text)
        if done is not None:
            return done
        if room_id in self.joining:
            held = self.joining[room_id]
            if held and held[-1]["type"] == events.MESSAGE:
                held[-1] = message_event(room_id, payload)  # the latest fills the rest
            else:
                held.append(message_event(room_id, payload))
            return False
        cursor = self.joined[room_id].cursor  # joined, and this seq not sent yet
        if seq == cursor.delivered + 1 and not self.delivery_lock.locked():
            cursor.delivered = seq  # the socket did not take it at once: it waits
            await self.send_bounded({"type": "websocket.send", "text": text}, len(text))
            return True
        self._queue(message_event(room_id, payload))
        return False

    async def fanout_event(self, event: dict) -> None:
        """Any other room event (typing, receipt, deletion, presence diff)."""
        if event["room_id"] in self.joining:
            self.joining[event["room_id"]].append(event)
        elif self.delivery_lock.locked() or self.queued:
            self._queue(event)
        else:
            await self._handle_room_event(event)

    def catch_up(self, room_id: int, last_seq: int) -> None:
        """The room is at `last_seq` (the fan-out's refresh): fill from the
        database what did not ring."""

        async def fill() -> None:
            room = self.joined.get(room_id)  # still joined, once the lock is ours
            if room is not None:
                at = streams.resume_from(since=room.cursor.delivered, last_seq=last_seq)
                room.cursor.sent(max(room.cursor.delivered, at))
                await self._replay(room, last_seq)

        room = self.joined.get(room_id)
        if room is not None and not room.cursor.is_sent(last_seq):
            self._under_lock(fill)

    # --- delivery ---------------------------------------------------------------------
    def _queue(self, event: dict) -> None:
        """Deliver a room event once the lock is free, after those queued before it."""
        if event["type"] == events.MESSAGE:
            at = self.queued_message.get(event["room_id"])
            if at is not None:
                self.queued[at] = event  # the latest doorbell fills the ones it replaces
                return
            self.queued_message[event["room_id"]] = len(self.queued)
        self.queued.append(event)
        if len(self.queued) == 1:
            self._under_lock(self._deliver_queued)

    async def _deliver_queued(self) -> None:
        while self.queued:
            batch, self.queued, self.queued_message = self.queued, [], {}
            for event in batch:
                await self._handle_room_event(event)

    def _under_lock(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run `work` with the delivery lock, after what holds it now (in
        order: the lock is FIFO), in a task of its own."""

        async def locked() -> None:
            async with self.delivery_lock:
                await work()

        spawn(locked(), into=self.waiting)

    async def _handle_room_event(self, event: dict) -> None:
        """A room event, with the delivery lock held or not needed."""
        if event["type"] == events.MESSAGE:
            room = self.joined.get(event["room_id"])
            if room is not None:
                await self._deliver(room, event["payload"])
        else:
            await self.dispatch(event)

    async def _deliver(self, room: JoinedRoom, payload: dict) -> None:
        """A message by seq, with the delivery lock held: dropped if sent,
        after its gap if ahead of one."""
        for message in await room.cursor.offer(payload["seq"], payload):
            await self.send_frame(message)


def message_event(room_id: int, payload: dict) -> dict:
    return {"type": events.MESSAGE, "room_id": room_id, "payload": payload}
