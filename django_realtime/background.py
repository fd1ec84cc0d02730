"""
Provides spawn(): a task nobody awaits, held until it ends (the event loop
keeps only a weak reference to it) and whose failure is logged, not lost.
"""

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

logger = logging.getLogger(__name__)

_running: set[asyncio.Future] = set()


def spawn(work: Awaitable[Any], *, into: set | None = None) -> asyncio.Future:
    """Run `work` as a task of the running loop, held in `into` (a set its
    owner may cancel, a connection's) or else the module's own until it ends."""
    task = asyncio.ensure_future(work, loop=asyncio.get_running_loop())
    held = _running if into is None else into
    held.add(task)

    def ended(done: asyncio.Future) -> None:
        held.discard(done)
        if not done.cancelled() and done.exception() is not None:
            logger.error("a background task failed", exc_info=done.exception())

    task.add_done_callback(ended)
    return task
