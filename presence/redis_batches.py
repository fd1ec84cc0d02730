"""
Provides Batch: one shard's calls of one presence script on one event loop
sent together, those a loop turn makes (and those made while the previous
call was out) in one call of the script's batch form (presence.scripts:
ROOM_JOINS, USER_OPENS), each caller answered with its own part of the
reply. A storm of joins or connections then costs a call per turn, not per
connection; a lone one costs what it did.
"""

from __future__ import annotations

import asyncio
from typing import Any

from django_realtime.batching import Outbox, settle

from . import conf
from .redis_shards import Client


class Batch:
    """One shard's calls of the script `name` on one event loop."""

    def __init__(self, client: Client, name: str, due_key: str) -> None:
        self.client = client
        self.name = name
        self.due_key = due_key
        self.outbox = Outbox(self._send)

    def put(self, key: str, args: list[Any]) -> asyncio.Future:
        """Queue one call (its key and its part of the arguments); await its reply."""
        return self.outbox.put((key, args))

    async def _send(self, queued: list[tuple[Any, asyncio.Future]]) -> None:
        ttl_ms = int(conf.ttl_seconds() * 1000)
        # Keys outlive the lease by a TTL: the safety net for an abandoned Redis.
        keys, args = [self.due_key], [ttl_ms, 2 * ttl_ms]
        for (key, own), _ in queued:
            keys.append(key)
            args += own
        try:
            replies = await self.client.run(self.name, keys, args)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - each caller raises it (and answers "no change")
            replies = [exc] * len(queued)
        for (_, future), reply in zip(queued, replies, strict=True):
            settle(future, reply)
