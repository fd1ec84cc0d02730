"""
Provides LoopHub, what the process's hubs share (the room fan-out, the topic
hub, the open documents): one per event loop, one layer Inbox, and loops
started lazily: a receive loop handing each event to the hub, a refresh loop
re-joining the groups and catching up from the database (memberships
expire; a restarted Redis has none).
"""

from __future__ import annotations

import asyncio
import logging
import random
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, Self

from . import bus
from .conf import realtime_settings

logger = logging.getLogger(__name__)

_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[type, Any]] = (
    weakref.WeakKeyDictionary()
)


def _refresh_period() -> float:
    """GROUP_REFRESH_SECONDS, jittered per process so processes spread out."""
    return realtime_settings.GROUP_REFRESH_SECONDS * random.uniform(0.5, 1.0)


class LoopHub:
    """A process's receiver of some layer groups. A subclass names its
    channel (CHANNEL_PREFIX), handles events (`handle`, after `parse`),
    and says what a refresh re-joins and catches up (`refresh`)."""

    CHANNEL_PREFIX = "hub"

    def __init__(self) -> None:
        self.inbox = bus.Inbox(prefix=self.CHANNEL_PREFIX)
        self.tasks: dict[str, asyncio.Task] = {}
        self.starting = asyncio.Lock()

    @classmethod
    def for_loop(cls) -> Self:
        """The running event loop's hub of this class (one per server process)."""
        loop = asyncio.get_running_loop()
        hubs = _hubs.get(loop)
        if hubs is None:
            hubs = _hubs[loop] = {}
        found = hubs.get(cls)
        if found is None:
            found = hubs[cls] = cls()
        return found

    # --- the loops ------------------------------------------------------------------
    def loops(self) -> dict[str, Callable[[], Coroutine[Any, Any, None]]]:
        """The loops to keep running once the channel exists, by name."""
        return {"receive": self._receive_loop, "refresh": self._refresh_loop}

    def keep(self, name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Start `loop` unless it runs (again, if it ended)."""
        task = self.tasks.get(name)
        if task is None or task.done():
            self.tasks[name] = asyncio.create_task(loop(), name=f"{self.CHANNEL_PREFIX}-{name}")

    async def start(self) -> None:
        """Make the channel (one, however many start at once) and keep the loops running."""
        if not self.inbox.channel:
            async with self.starting:
                if not self.inbox.channel:
                    self.inbox.channel = await bus.new_channel(self.CHANNEL_PREFIX)
        for name, loop in self.loops().items():
            self.keep(name, loop)

    async def close(self) -> None:
        """Stop the loops and leave the groups."""
        for task in self.tasks.values():
            if task is not asyncio.current_task():
                task.cancel()
        self.tasks.clear()
        await self.inbox.close()

    # --- receiving --------------------------------------------------------------------
    def parse(self, event: bus.Event) -> Any:
        """What `handle` takes of a layer event (None: ignore it)."""
        return event

    async def handle(self, item: Any, /) -> None:
        """Handle what `parse` took of an event (a subclass may set its own
        method here: `handle = dispatch`, no extra await per event)."""
        raise NotImplementedError

    async def _receive_loop(self) -> None:
        inbox, parse, handle = self.inbox, self.parse, self.handle
        while True:
            event = await inbox.next()  # None after a failed receive (logged)
            if event is None:
                continue  # the refresh catches up afterwards
            try:
                item = parse(event)
                if item is not None:
                    await handle(item)
            except Exception:  # noqa: BLE001 - one bad event must not end the hub
                logger.exception("%s: a %s event failed", self.CHANNEL_PREFIX, event.get("type"))

    # --- refreshing -------------------------------------------------------------------
    async def refresh(self, *, everything: bool) -> bool:
        """Re-join the groups and catch up what did not ring: every group
        (`everything`: the period came round, or the layer's epoch moved),
        else those whose join failed. False when it should be tried again."""
        raise NotImplementedError

    def stale(self) -> bool:
        """Whether a group may be gone (its add failed, or Redis came back since)."""
        return self.inbox.stale

    async def _refresh_loop(self) -> None:
        """refresh() every GROUP_REFRESH_SECONDS (jittered), at once when the
        layer's epoch moves (Redis answers again), and for a group whose
        join failed, within a second."""
        loop = asyncio.get_running_loop()
        seen = bus.epoch()
        due = loop.time() + _refresh_period()
        while True:
            await asyncio.sleep(min(1.0, realtime_settings.GROUP_REFRESH_SECONDS))
            now, current = loop.time(), bus.epoch()
            everything = now >= due or current != seen
            if not everything and not self.stale():
                continue
            try:
                if await self.refresh(everything=everything) and everything:
                    seen = current
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - try again next round
                logger.exception("%s: refresh failed", self.CHANNEL_PREFIX)
            if everything:
                due = now + _refresh_period()
