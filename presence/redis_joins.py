"""
Provides Joins: the room joins of one shard and event loop sent together,
those a loop turn makes (and those made while the previous call was out) in
one script call (presence.scripts.ROOM_JOINS), each caller answered with
its own part of the reply. A join storm then costs a call per turn, not per
join; a lone join costs what it did.
"""

from __future__ import annotations

import asyncio
from typing import Any

from django_realtime.batching import Outbox, settle

from . import conf
from .redis_shards import Client


class Joins:
    """One shard's joins on one event loop."""

    def __init__(self, client: Client, due_key: str) -> None:
        self.client = client
        self.due_key = due_key
        self.outbox = Outbox(self._send)

    def put(self, room_key: str, args: list[Any]) -> asyncio.Future:
        """Queue a join (ROOM_JOINS' seven arguments of one join); await its reply."""
        return self.outbox.put((room_key, args))

    async def _send(self, queued: list[tuple[Any, asyncio.Future]]) -> None:
        ttl_ms = int(conf.ttl_seconds() * 1000)
        # Keys outlive the lease by a TTL: the safety net for an abandoned Redis.
        keys, args = [self.due_key], [ttl_ms, 2 * ttl_ms]
        for (room_key, join_args), _ in queued:
            keys.append(room_key)
            args += join_args
        try:
            replies = await self.client.run("room_joins", keys, args)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - each caller raises it (and answers "no change")
            replies = [exc] * len(queued)
        for (_, future), reply in zip(queued, replies, strict=True):
            settle(future, reply)
