"""
Provides Sweeping, the part of the Redis presence store that ends expired
leases, any process's: connections whose process died without a word, and
typists whose `true` ran out. Sweeps in many processes at once report each
expiry once (each ending is a script that says whether it ended anything).
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from typing import Any

from . import conf, redis_leases
from .redis_leases import Leases, changes_of
from .redis_shards import Client
from .store import Sweep, TypingLapse

# Sweep batches per sweep; what is left waits for the next sweep.
MAX_SWEEP_BATCHES = 20


def due_entry(member: str) -> tuple[str, int, str]:
    """('r' | 'u' | 't', room or user id, channel or typing member) of a due index entry."""
    kind, ident, rest = (member.split(":", 2) + ["", ""])[:3]
    try:
        return kind, int(ident), rest
    except ValueError:
        return "", 0, ""


def typing_lapse(member: str) -> TypingLapse | None:
    try:
        room_id, room_slug, user_id, username = json.loads(member)
        return TypingLapse(room_id, room_slug, user_id, username)
    except (ValueError, TypeError):
        return None


class Sweeping(Leases):
    """sweep(), called by presence.upkeep."""

    async def sweep(self) -> Sweep:
        """End expired leases (any process's) on every shard and report what
        that changed, once."""
        result = Sweep()
        for swept in await asyncio.gather(*(self._sweep_shard(i) for i in range(len(self.urls)))):
            result.changes.extend(swept.changes)
            result.offline_user_ids.extend(swept.offline_user_ids)
            result.typing_lapses.extend(swept.typing_lapses)
        return result

    async def _sweep_shard(self, shard: int) -> Sweep:
        result = Sweep()
        timeout = conf.upkeep_timeout_seconds()
        batch = redis_leases.BATCH
        for _ in range(MAX_SWEEP_BATCHES):
            due: list[str] = await self.shards.call(
                "sweep",
                shard,
                lambda c: c.scripts["due"](keys=[self.due_key], args=[batch]),
                [],
                timeout=timeout,
            )
            if not due:
                break
            leases: dict[int, list[str]] = defaultdict(list)
            typists: dict[int, list[str]] = defaultdict(list)
            users: dict[int, list[str]] = defaultdict(list)
            for member in due:
                kind, ident, rest = due_entry(member)
                if kind == "r":
                    leases[ident].append(rest)
                elif kind == "t":
                    typists[ident].append(rest)
                elif kind == "u":
                    users[ident].append(rest)

            async def end(
                c: Client,
                leases: dict[int, list[str]] = leases,
                typists: dict[int, list[str]] = typists,
                users: dict[int, list[str]] = users,
            ) -> tuple[list[Any], list[int]]:
                pipe = c.redis.pipeline(transaction=False)
                room_ids = sorted(set(leases) | set(typists))
                for room_id in room_ids:
                    channels = leases.get(room_id, [])
                    await c.scripts["room_sweep"](
                        keys=[self.room_key(room_id), self.due_key],
                        args=[room_id, len(channels), *channels, *typists.get(room_id, [])],
                        client=pipe,
                    )
                user_ids = sorted(users)
                for user_id in user_ids:
                    await c.scripts["user_sweep"](
                        keys=[self.user_key(user_id), self.due_key],
                        args=[user_id, *users[user_id]],
                        client=pipe,
                    )
                replies = await pipe.execute()
                offline = [
                    u for u, gone in zip(user_ids, replies[len(room_ids) :], strict=True) if gone
                ]
                return replies[: len(room_ids)], offline

            ended: tuple[list[Any], list[int]] = await self.shards.call(
                "sweep", shard, end, ([], []), timeout=timeout
            )
            for changes, lapsed in ended[0]:
                result.changes.extend(changes_of(changes))
                result.typing_lapses.extend(x for x in map(typing_lapse, lapsed) if x)
            result.offline_user_ids.extend(ended[1])
            if len(due) < batch:
                break
        return result
