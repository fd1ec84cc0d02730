"""
Provides the documents a process has open: `hub()` (one per event loop, a
django_realtime.hubs.LoopHub that refreshes and ticks them) and its
`LiveDocument`s.

Why it is shaped so: docs/architecture.md, "chat.collab.hub".
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from pycrdt import Doc, get_update, merge_updates

from django_realtime import bus
from django_realtime.asyncdb import db
from django_realtime.background import spawn
from django_realtime.conf import realtime_settings
from django_realtime.delivery import Entry, SeqCursor
from django_realtime.errors import Unavailable
from django_realtime.hubs import LoopHub

from . import events, protocol, selectors, services
from .protocol import AwarenessEntry

logger = logging.getLogger(__name__)

# This process, in awareness relays: a process skips its own.
PROCESS = uuid.uuid4().hex
# How often a document checks its awareness timeouts and whether it is idle.
TICK_SECONDS = 5.0
# How long a doorbell ahead of a gap waits for this process's own batch in
# flight (a store takes milliseconds) before the gap is read from the database.
STORE_WAIT_SECONDS = 1.0
# Presence's layer event (presence.events.DIFF), read here on the room's group.
PRESENCE_DIFF = "presence.diff"
# Client ids one connection may speak for in awareness: a stock client has
# one (Yjs picks a new one only when it meets its own id in a remote update).
MAX_CLIENTS_PER_EDITOR = 4


def complete(ydoc: Doc, update: bytes) -> bool:
    """Whether `update`, applied to `ydoc`, left nothing pending (every
    struct it carries integrated)."""
    return get_update(update, ydoc.get_state())[:1] == b"\x00"


class Editor(Protocol):
    """A connection editing a document (chat.collab.consumers.DocConsumer)."""

    channel_name: str
    user: Any

    async def send_bytes(self, data: bytes) -> None: ...

    async def renew(self) -> None:
        """Keep the connection's per-user slot (at each refresh)."""


@dataclass
class Aware:
    """One client's awareness as last seen: by whom, from which of this
    process's connections (None: another process's), and when."""

    entry: AwarenessEntry
    user_id: int
    channel: str | None
    seen: float


class LiveDocument:
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

    async def submit(self, editor: Editor, update: bytes) -> None:
        """An editor's update: queued for the document's writer, which stores
        it with every other update waiting here (raises what the service
        refused it with). Once stored it is applied and forwarded to this
        process's other editors; the other processes hear of it from the
        doorbell rung on commit."""
        if len(update) > realtime_settings.DOCS_MAX_UPDATE_BYTES:
            raise services.UpdateTooLarge("update too large")
        done = asyncio.get_running_loop().create_future()
        self.queue.append((editor, update, done))
        if self.writer is None:
            self.writer = spawn(self._write())
        await done

    async def _write(self) -> None:
        """The document's one writer in this process: takes every update
        waiting and stores them in one transaction (services.updates_append),
        while the next ones queue. Each editor's updates keep their order;
        nothing is forwarded before it has committed. No batch stops it: an
        editor whose batch failed is told so, and the next batch goes on."""
        try:
            while self.queue:
                batch, self.queue = self.queue, []
                try:
                    await self._store(batch)
                except BaseException as exc:  # a bug here must not leave editors waiting
                    if not selectors.crdt_failed(exc):
                        raise
                    logger.exception("document %s: storing a batch failed", self.document_id)
                    self.trial = None
                    _settle(batch, Unavailable("storage is unavailable"))
        finally:
            self.writer = None

    async def _store(self, batch: list[tuple[Editor, bytes, asyncio.Future]]) -> None:
        self.storing = asyncio.get_running_loop().create_future()
        try:
            await self._store_batch(batch)
        finally:
            self.storing.set_result(None)
            self.storing = None

    def _trial(self) -> Doc:
        """The document as this process will know it once what it stored is
        applied: where a new update is tried."""
        if self.trial is None:
            trial: Doc = Doc()
            trial.apply_update(self.ydoc.get_update())
            for seq in sorted(self.unapplied):
                selectors.apply_stored(
                    trial, self.unapplied[seq], document_id=self.document_id, seq=seq
                )
            self.trial = trial
        return self.trial

    def _check(self, batch: list[tuple[Editor, bytes, asyncio.Future]]) -> list[bool]:
        """For each update of the batch, in order: whether it decodes, applies
        to the document (with the batch's earlier good ones), leaves nothing
        pending, and leaves a document whose whole state loads again (what a
        snapshot, a new editor and another process read). The good ones stay
        applied to `trial`."""
        good: list[bool] = []
        kept: list[bytes] = []
        for _, update, _ in batch:
            ok = self._try(update)
            if ok:
                kept.append(update)
            else:
                self._retry(kept)
            good.append(ok)
        if kept and not self._reloads():
            # One of them leaves a document that does not load: one at a time.
            self._retry([])
            checked, kept = good, []
            good = []
            for (_, update, _), was in zip(batch, checked, strict=True):
                ok = was and self._try(update) and self._reloads()
                if ok:
                    kept.append(update)
                else:
                    self._retry(kept)
                good.append(ok)
        return good

    def _try(self, update: bytes) -> bool:
        """Apply `update` to the trial: whether it applied completely. If it
        did not, the trial is copied afresh (it may hold part of it)."""
        trial = self._trial()
        try:
            trial.apply_update(update)
            if complete(trial, update):
                return True
        except BaseException as exc:  # not an update of this document
            if not selectors.crdt_failed(exc):
                raise
        self.trial = None
        return False

    def _retry(self, kept: list[bytes]) -> None:
        """A fresh trial with the batch's good updates so far."""
        self.trial = None
        trial = self._trial()
        for update in kept:
            trial.apply_update(update)

    def _reloads(self) -> bool:
        """Whether the trial's whole state loads into an empty document."""
        try:
            Doc().apply_update(self._trial().get_update())
        except BaseException as exc:
            if not selectors.crdt_failed(exc):
                raise
            return False
        return True

    async def _store_batch(self, batch: list[tuple[Editor, bytes, asyncio.Future]]) -> None:
        good = self._check(batch)
        for ok, (_, _, done) in zip(good, batch, strict=True):
            if not ok and not done.done():
                done.set_exception(services.UpdateInvalid("not a Yjs update of this document"))
        batch = [item for ok, item in zip(good, batch, strict=True) if ok]
        if not batch:
            return
        try:
            outcomes = await db(
                services.updates_append,
                room=self.room,
                document_id=self.document_id,
                updates=[services.Pending(e.user, u, e.channel_name) for e, u, _ in batch],
            )
        except Unavailable as exc:
            outcomes = [Unavailable(exc.message) for _ in batch]
        except Exception:  # noqa: BLE001 - a bug here must not leave editors waiting
            logger.exception("storing updates of document %s failed", self.document_id)
            outcomes = [Unavailable("storage is unavailable") for _ in batch]
        stored = [
            (outcome.seq, update, editor.channel_name)
            for (editor, update, _), outcome in zip(batch, outcomes, strict=True)
            if isinstance(outcome, services.Appended)
        ]
        if len(stored) < len(batch):
            self.trial = None  # it holds updates that were not stored
        for seq, update, _ in stored:
            self.unapplied[seq] = update
        if stored:
            try:
                await self._ingest_many(stored)
            except BaseException as exc:  # stored all the same; the database has them
                if not selectors.crdt_failed(exc):
                    raise
                logger.exception("document %s: applying stored updates failed", self.document_id)
        logged = 0
        for (_, _, done), outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, services.Appended):
                logged = max(logged, outcome.logged)
                if not done.done():
                    done.set_result(None)
            elif not done.done():
                done.set_exception(outcome)
        if logged >= realtime_settings.DOCS_COMPACT_UPDATES and self.compacting is None:
            self.compacting = spawn(self._compact())

    async def _ingest_many(self, stored: list[tuple[int, bytes, str]]) -> None:
        """Stored updates as (seq, update, origin), in seq order."""
        async with self.lock:
            frames: list[dict] = []
            for seq, update, origin in stored:
                frame = {"update": update, "origin": origin, "seq": seq}
                frames += await self.cursor.offer(seq, frame)
            await self._apply(frames)

    async def _compact(self) -> None:
        try:
            await db(services.document_compact, document_id=self.document_id)
        except Exception:  # noqa: BLE001 - compaction is best-effort; the log stays
            logger.exception("compacting document %s failed", self.document_id)
        finally:
            self.compacting = None

    # --- awareness ------------------------------------------------------------------------
    def awareness_all(self) -> bytes:
        return protocol.awareness_message([a.entry for a in self.awareness.values()])

    async def aware(self, editor: Editor, payload: bytes) -> None:
        """An editor's awareness update: its own entries kept, relayed here
        and to the other processes; entries under ids it does not hold are
        dropped."""
        entries = self._own(protocol.parse_awareness(payload), editor)
        if not entries:
            return
        self._note(entries, user_id=editor.user.pk, channel=editor.channel_name)
        await self._to_editors(protocol.awareness_message(entries), skip=editor.channel_name)
        await events.broadcast_awareness(
            document_id=self.document_id,
            payload=protocol.awareness_update(entries),
            process=PROCESS,
            user_id=editor.user.pk,
        )

    def _own(self, entries: list[AwarenessEntry], editor: Editor) -> list[AwarenessEntry]:
        """The entries `editor` may speak for: ids it holds, ids its user
        holds on another process (a client that reconnected here), and new
        ids up to MAX_CLIENTS_PER_EDITOR."""
        channel, user_id = editor.channel_name, editor.user.pk
        held = {cid for cid, a in self.awareness.items() if a.channel == channel}
        mine: list[AwarenessEntry] = []
        for entry in entries:
            known = self.awareness.get(entry.client_id)
            if known is None:
                if entry.state == "null" or len(held) >= MAX_CLIENTS_PER_EDITOR:
                    continue
                held.add(entry.client_id)
            elif known.channel != channel and not (
                known.channel is None and known.user_id == user_id
            ):
                continue  # another editor's client
            mine.append(entry)
        return mine

    def _note(self, entries: list[AwarenessEntry], *, user_id: int, channel: str | None) -> None:
        now = asyncio.get_running_loop().time()
        for entry in entries:
            if entry.state == "null":
                self.awareness.pop(entry.client_id, None)
            else:
                self.awareness[entry.client_id] = Aware(entry, user_id, channel, now)

    def _theirs(self, entries: list[AwarenessEntry], *, user_id: int) -> list[AwarenessEntry]:
        """The entries another process relayed for `user_id` that are theirs:
        none held by an editor here or by another user."""
        return [
            entry
            for entry in entries
            if (known := self.awareness.get(entry.client_id)) is None
            or (known.channel is None and known.user_id == user_id)
        ]

    async def _remove_awareness(self, gone: list[Aware], *, relay: bool) -> None:
        removal = [AwarenessEntry(a.entry.client_id, a.entry.clock + 1, "null") for a in gone]
        for aware in gone:
            self.awareness.pop(aware.entry.client_id, None)
        await self._to_editors(protocol.awareness_message(removal))
        if relay:
            await events.broadcast_awareness(
                document_id=self.document_id,
                payload=protocol.awareness_update(removal),
                process=PROCESS,
                user_id=gone[0].user_id,
            )

    async def _to_editors(self, message: bytes, *, skip: str | None = None) -> None:
        for channel, editor in list(self.editors.items()):
            if channel != skip:
                await editor.send_bytes(message)

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
            if event.get("process") == PROCESS:
                return
            payload = events.decode(event["awareness"])
            user_id = int(event["user_id"])
            entries = self._theirs(protocol.parse_awareness(payload), user_id=user_id)
            if entries:
                self._note(entries, user_id=user_id, channel=None)
                await self._to_editors(protocol.awareness_message(entries))
        elif kind == PRESENCE_DIFF and event.get("room_id") == self.room_id:
            left = {leave["user"]["id"] for leave in event["payload"].get("leaves", [])}
            gone = [a for a in self.awareness.values() if a.channel is None and a.user_id in left]
            if gone:
                await self._remove_awareness(gone, relay=False)

    async def _tick(self, now: float) -> None:
        timeout = realtime_settings.DOCS_AWARENESS_TIMEOUT_SECONDS
        stale = [a for a in self.awareness.values() if a.channel is None and now - a.seen > timeout]
        if stale:
            await self._remove_awareness(stale, relay=False)
        idle = realtime_settings.DOCS_IDLE_SECONDS
        if not self.editors and self.idle_since is not None and now - self.idle_since >= idle:
            hub().evict(self)

    async def close(self) -> None:
        self.closed = True
        queued, self.queue = self.queue, []
        _settle(queued, Unavailable("the document closed"))
        if self.reader is not None and self.reader is not asyncio.current_task():
            self.reader.cancel()
        await self.inbox.close()


def _settle(batch: list[tuple[Editor, bytes, asyncio.Future]], error: Exception) -> None:
    """Tell the editors waiting on `batch` that it was not stored."""
    for _, _, done in batch:
        if not done.done():
            done.set_exception(error)


class Hub(LoopHub):
    """The process's open documents, by id. Each reads its own Inbox; the
    hub refreshes them (LoopHub's refresh loop) and ticks them."""

    CHANNEL_PREFIX = "doc"

    def __init__(self) -> None:
        super().__init__()
        self.documents: dict[int, LiveDocument] = {}

    def loops(self) -> dict[str, Any]:
        return {"refresh": self._refresh_loop, "tick": self._tick_loop}

    async def start(self) -> None:
        for name, loop in self.loops().items():  # no channel: the documents have theirs
            self.keep(name, loop)

    async def attach(self, opened: services.Opened, editor: Editor) -> LiveDocument:
        await self.start()
        while True:
            live = self.documents.get(opened.document_id)
            if live is None:
                live = LiveDocument(document_id=opened.document_id, room=opened.room)
                self.documents[opened.document_id] = live
                try:
                    await live.start()
                except BaseException:
                    self.evict(live)  # the next editor tries again
                    raise
            else:
                await live.ready.wait()
            if not live.closed:  # not evicted meanwhile
                break
        await live.add(editor, last_seq=opened.last_seq)
        return live

    async def detach(self, live: LiveDocument, editor: Editor) -> None:
        await live.remove(editor)

    def evict(self, live: LiveDocument) -> None:
        """Drop an idle document from memory (it is all in the database)."""
        if self.documents.get(live.document_id) is live:
            del self.documents[live.document_id]
        spawn(live.close())

    def stale(self) -> bool:
        return any(live.inbox.stale for live in self.documents.values())

    async def refresh(self, *, everything: bool) -> bool:
        """Refresh every document (or those whose groups may be gone)."""
        for live in list(self.documents.values()):
            if live.closed or not live.ready.is_set() or not (everything or live.inbox.stale):
                continue  # one still opening joins its groups itself
            try:
                await live.refresh()
            except BaseException as exc:  # one document's failure is not the others'
                if not selectors.crdt_failed(exc):
                    raise
                logger.exception("document %s: refresh failed", live.document_id)
        return True

    async def _tick_loop(self) -> None:
        """Each document's awareness timeouts and idleness, every TICK_SECONDS."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(TICK_SECONDS)
            for live in list(self.documents.values()):
                try:
                    await live._tick(loop.time())
                except BaseException as exc:
                    if not selectors.crdt_failed(exc):
                        raise
                    logger.exception("document %s: tick failed", live.document_id)


def hub() -> Hub:
    """The running event loop's hub (one per server process)."""
    return Hub.for_loop()
