"""
Provides the upkeep task of the Redis presence store: one per process (not
one per connection), started with the process's first connection.

It refreshes this process's leases every PRESENCE_HEARTBEAT_SECONDS and
sweeps everyone's expired ones every PRESENCE_SWEEP_SECONDS, announcing what
the sweep changed: leaves and status changes as presence diffs, typists whose
process died as `is_typing: false`, and last-seen times. Every process runs
it; sweeps in many processes at once report each expiry once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from . import conf, transitions

if TYPE_CHECKING:
    from .redis_store import RedisPresenceStore

logger = logging.getLogger(__name__)

# Never spin: the shortest pause between two rounds, whatever the settings say.
MIN_PAUSE_SECONDS = 0.05


async def run(store: RedisPresenceStore) -> None:
    loop = asyncio.get_running_loop()
    next_beat = loop.time() + conf.heartbeat_seconds()
    next_sweep = loop.time()
    while True:
        now = loop.time()
        if now >= next_beat:
            next_beat = now + conf.heartbeat_seconds()
            await _step("heartbeat", _heartbeat(store))
        if now >= next_sweep:
            next_sweep = now + conf.sweep_seconds()
            await _step("sweep", _sweep(store))
        pause = min(next_beat, next_sweep) - loop.time()
        await asyncio.sleep(max(MIN_PAUSE_SECONDS, pause))


async def _heartbeat(store: RedisPresenceStore) -> None:
    await transitions.announce(await store.heartbeat())


async def _sweep(store: RedisPresenceStore) -> None:
    await transitions.announce_sweep(await store.sweep())


async def _step(what: str, step: Awaitable[None]) -> None:
    try:
        await step
    except Exception:  # noqa: BLE001 - the upkeep must outlive any one failure
        logger.exception("presence upkeep: %s failed", what)
