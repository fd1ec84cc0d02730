"""
Provides the documents a process has open: `hub()`, one per event loop (a
django_realtime.hubs.LoopHub that refreshes and ticks them), which opens each
as a LiveDocument (chat.collab.document) and drops it from memory once idle.
Why it is shaped so: docs/architecture.md, "chat.collab.hub".
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from django_realtime.background import spawn
from django_realtime.hubs import LoopHub

from . import selectors, services
from .document import LiveDocument
from .editor import Editor

logger = logging.getLogger(__name__)

# How often a document checks its awareness timeouts and whether it is idle.
TICK_SECONDS = 5.0


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
                    if await live.tick(loop.time()):
                        self.evict(live)
                except BaseException as exc:
                    if not selectors.crdt_failed(exc):
                        raise
                    logger.exception("document %s: tick failed", live.document_id)


def hub() -> Hub:
    """The running event loop's hub (one per server process)."""
    return Hub.for_loop()
