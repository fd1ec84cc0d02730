"""
Provides LiveDocument, one document open in a process: the CRDT loaded once,
stored updates applied in seq order whichever way they come (its writer, the
layer's doorbell, the database) and forwarded merged to its editors here.
How: docs/architecture.md, "chat.collab.hub".
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pycrdt import Doc, merge_updates

from django_realtime import bus
from django_realtime.asyncdb import db
from django_realtime.background import spawn
from django_realtime.conf import realtime_settings
from django_realtime.delivery import Entry, SeqCursor
from django_realtime.errors import Unavailable

from . import events, protocol, selectors
from .awareness import Aware, DocumentAwareness
from .editor import Editor
from .writer import DocumentWriter

logger = logging.getLogger(__name__)

# How long a doorbell ahead of a gap waits for this process's own batch in
# flight (a store takes milliseconds) before the gap is read from the database.
STORE_WAIT_SECONDS = 1.0
# Presence's layer event (presence.events.DIFF), read here on the room's group.
PRESENCE_DIFF = "presence.diff"


class LiveDocument(DocumentWriter, DocumentAwareness):
    """One document open in this process: its CRDT, its log cursor, its
    editors here; the writer and awareness are mixins."""

    def __init__(self, *, document_id: int, room: Any):
        self.document_id = document_id
        self.room = room  # the Room: updates_append asks the room's access rule
        self.room_id = room.pk
        self.ydoc: Doc = Doc()
        # The document with this process's stored updates not applied yet
        # (`unapplied`, by seq): where a new update is tried (None: copied
        # from ydoc when next needed).
        self.trial: Doc | None = None
        self.unapplied: dict[int, bytes] = {}
        self.cursor = SeqCursor(fetch=self._fetch)
        self.editors: dict[str, Editor] = {}
        self.awareness: dict[int, Aware] = {}
        self.lock = asyncio.Lock()  # applies and forwards one seq at a time
        self.inbox = bus.Inbox(
            [events.doc_group(document_id), bus.room_group(room.pk)], prefix="doc"
        )
        self.ready = asyncio.Event()
        self.reader: asyncio.Future | None = None
        self.compacting: asyncio.Future | None = None
        # Updates of this process's editors waiting for the writer.
        self.queue: list[tuple[Editor, bytes, asyncio.Future]] = []
        self.writer: asyncio.Future | None = None
        self.storing: asyncio.Future | None = None  # done once a batch is applied
        # Applied updates not yet forwarded to this process's editors.
        self.outbox: list[dict] = []
        self.flusher: asyncio.Future | None = None
        self.idle_since: float | None = None
        self.closed = False

    # --- loading and the log ----------------------------------------------------------
    async def start(self) -> None:
        """Join the groups first, then read the document: a doorbell that
        rings in between is held by the cursor, not lost."""
        try:
            await self.inbox.open()
            self.reader = spawn(self._read())
            async with self.lock:
                stored = await db(selectors.updates_after, document_id=self.document_id, after=0)
                for seq, update in stored.entries:
                    selectors.apply_stored(self.ydoc, update, document_id=self.document_id, seq=seq)
                self.cursor.delivered = stored.last_seq
        finally:
            self.ready.set()

    async def _fetch(self, after: int, until: int) -> list[Entry]:
        stored = await db(
            selectors.updates_after, document_id=self.document_id, after=after, until=until
        )
        return [
            Entry(seq, {"update": update, "origin": "", "seq": seq})
            for seq, update in stored.entries
        ]

    async def catch_up(self, last: int | None = None) -> None:
        """Apply what the database has past the cursor (up to `last`)."""
        async with self.lock:
            if last is None:
                try:
                    stored = await db(
                        selectors.updates_after,
                        document_id=self.document_id,
                        after=self.cursor.delivered,
                    )
                except Unavailable:
                    return
                frames = self.cursor.take(
                    [
                        Entry(seq, {"update": u, "origin": "", "seq": seq})
                        for seq, u in stored.entries
                    ]
                )
            else:
                frames = await self.cursor.catch_up(last)
            await self._apply(frames)

    async def _apply(self, frames: list[dict]) -> None:
        """Apply stored updates, in seq order, and queue them for this
        process's editors."""
        if not frames:
            return
        applied = []
        for frame in frames:
            seq = frame.get("seq", 0)
            if selectors.apply_stored(
                self.ydoc, frame["update"], document_id=self.document_id, seq=seq
            ):
                applied.append(frame)
            if self.unapplied.pop(seq, None) is None and self.trial is not None:
                try:
                    self.trial.apply_update(frame["update"])
                except BaseException as exc:
                    if not selectors.crdt_failed(exc):
                        raise
                    self.trial = None  # copied afresh when next needed
        if not applied:
            return
        self.outbox += applied
        if self.flusher is None:
            self.flusher = spawn(self._flush())

    async def _flush(self) -> None:
        """Forward what was applied to this process's editors: all that was
        applied by a loop turn later (this process's batch and other
        processes' doorbells alike; more of them when the process is busy) as
        ONE update message, Yjs merging them (a client applies what it
        already has as nothing), except to an editor that sent all of it."""
        try:
            while self.outbox:
                await asyncio.sleep(0)
                frames, self.outbox = self.outbox, []
                updates = [frame["update"] for frame in frames]
                try:
                    merged = updates[0] if len(updates) == 1 else merge_updates(*updates)
                except BaseException as exc:
                    if not selectors.crdt_failed(exc):
                        raise
                    merged = self.ydoc.get_update()  # all of it: clients apply what is new
                message = protocol.update_message(merged)
                origins = {frame["origin"] for frame in frames}
                for channel, editor in list(self.editors.items()):
                    if origins != {channel}:
                        await editor.send_bytes(message)
        finally:
            self.flusher = None

    async def _ingest_many(self, stored: list[tuple[int, bytes, str]]) -> None:
        """Stored updates as (seq, update, origin), in seq order."""
        async with self.lock:
            frames: list[dict] = []
            for seq, update, origin in stored:
                frame = {"update": update, "origin": origin, "seq": seq}
                frames += await self.cursor.offer(seq, frame)
            await self._apply(frames)

    # --- editors ------------------------------------------------------------------------
    async def add(self, editor: Editor, *, last_seq: int) -> None:
        """A new editor: the document caught up to what it was at open, then
        the server's sync step 1 and everyone's awareness."""
        self.idle_since = None
        self.editors[editor.channel_name] = editor
        await self.catch_up(last_seq)
        await editor.send_bytes(protocol.step1_message(self.ydoc.get_state()))
        if self.awareness:
            await editor.send_bytes(self.awareness_all())

    async def remove(self, editor: Editor) -> None:
        """The editor's connection ended: its clients leave everyone's awareness."""
        self.editors.pop(editor.channel_name, None)
        gone = [a for a in self.awareness.values() if a.channel == editor.channel_name]
        if gone:
            await self._remove_awareness(gone, relay=True)
        if not self.editors:
            self.idle_since = asyncio.get_running_loop().time()

    def step2_for(self, state_vector: bytes) -> bytes:
        """The reply to a client's sync step 1: what it is missing
        (ProtocolError for a state vector that does not decode)."""
        try:
            return protocol.step2_message(self.ydoc.get_update(state_vector))
        except BaseException as exc:
            if not selectors.crdt_failed(exc):
                raise
            raise protocol.ProtocolError("bad state vector") from None

    # --- the layer ------------------------------------------------------------------------
    async def _read(self) -> None:
        """The document's own receive loop: its doorbells wait on its writer
        and its database reads, which must not hold up other documents."""
        while not self.closed:
            event = await self.inbox.next()  # None after a failed receive (logged)
            if event is None:
                continue  # the hub's refresh catches up afterwards
            try:
                await self._on_event(event)
            except BaseException as exc:  # one bad event must not stop the document
                if not selectors.crdt_failed(exc):
                    raise
                logger.exception("document %s: handling %r failed", self.document_id, event)

    async def refresh(self) -> None:
        """Re-join the groups (memberships expire and a restarted Redis has
        none), then apply what did not ring meanwhile from the database, and
        keep the editors' slots."""
        await self.inbox.refresh()
        await self.catch_up()
        for editor in list(self.editors.values()):
            await editor.renew()

    async def _on_event(self, event: dict) -> None:
        kind = event.get("type")
        if kind == events.UPDATE and event.get("document_id") == self.document_id:
            first = int(event["seq"])
            last = int(event.get("last", first))
            if first > self.cursor.delivered + 1 and self.storing is not None:
                # The gap is most likely this process's own batch, committed
                # and about to be applied: wait for it rather than read it
                # back from the database.
                await asyncio.wait([self.storing], timeout=STORE_WAIT_SECONDS)
            if "updates" in event:
                updates = [events.decode(u) for u in event["updates"]]
                origins = [str(o) for o in event["origins"]]
                if len(updates) == len(origins) == last - first + 1:
                    seqs = range(first, last + 1)
                    await self._ingest_many(list(zip(seqs, updates, origins, strict=True)))
                    return
            await self.catch_up(last)  # read them from the database
        elif kind == events.AWARENESS and event.get("document_id") == self.document_id:
            await self._relayed(event)
        elif kind == PRESENCE_DIFF and event.get("room_id") == self.room_id:
            await self._left_room(event)

    async def tick(self, now: float) -> bool:
        """Awareness timeouts; whether nobody here has edited the document for
        DOCS_IDLE_SECONDS (the hub then drops it from memory)."""
        await self._expire_awareness(now)
        idle = realtime_settings.DOCS_IDLE_SECONDS
        return not self.editors and self.idle_since is not None and now - self.idle_since >= idle

    async def close(self) -> None:
        self.closed = True
        self._refuse_queued(Unavailable("the document closed"))
        if self.reader is not None and self.reader is not asyncio.current_task():
            self.reader.cancel()
        await self.inbox.close()
