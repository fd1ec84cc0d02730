"""
Provides DocumentWriter, an open document's one writer in a process: its
editors' updates checked against a trial copy of the document, stored in
batches (one transaction each), and compaction past DOCS_COMPACT_UPDATES.
How: docs/architecture.md, "chat.collab.hub".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pycrdt import Doc, get_update

from django_realtime.asyncdb import db
from django_realtime.background import spawn
from django_realtime.conf import realtime_settings
from django_realtime.errors import Unavailable

from . import selectors, services
from .editor import Editor

logger = logging.getLogger(__name__)


def complete(ydoc: Doc, update: bytes) -> bool:
    """Whether `update`, applied to `ydoc`, left nothing pending (every
    struct it carries integrated)."""
    return get_update(update, ydoc.get_state())[:1] == b"\x00"


class DocumentWriter:
    """A mixin for LiveDocument: its writer, and the trial it checks updates on."""

    document_id: int
    room: Any
    ydoc: Doc
    trial: Doc | None
    unapplied: dict[int, bytes]
    queue: list[tuple[Editor, bytes, asyncio.Future]]
    writer: asyncio.Future | None
    storing: asyncio.Future | None
    compacting: asyncio.Future | None
    _ingest_many: Callable[[list[tuple[int, bytes, str]]], Awaitable[None]]  # LiveDocument's

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

    async def _compact(self) -> None:
        try:
            await db(services.document_compact, document_id=self.document_id)
        except Exception:  # noqa: BLE001 - compaction is best-effort; the log stays
            logger.exception("compacting document %s failed", self.document_id)
        finally:
            self.compacting = None

    def _refuse_queued(self, error: Exception) -> None:
        """Tell every editor whose update still waits that it was not stored."""
        queued, self.queue = self.queue, []
        _settle(queued, error)


def _settle(batch: list[tuple[Editor, bytes, asyncio.Future]], error: Exception) -> None:
    """Tell the editors waiting on `batch` that it was not stored."""
    for _, _, done in batch:
        if not done.done():
            done.set_exception(error)
