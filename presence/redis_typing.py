"""
Provides TypingLeases, typing in the Redis presence store: each `true` is a
lease in the room that lapses by itself, so a typist whose process dies is
stopped by another process's sweep (presence.redis_sweep).
"""

from __future__ import annotations

import json

from .redis_leases import Leases


def typing_member(room_id: int, room_slug: str, user_id: int, username: str) -> str:
    """The typist as the sweep finds them again (presence.redis_sweep.typing_lapse)."""
    return json.dumps([room_id, room_slug, user_id, username], separators=(",", ":"))


class TypingLeases(Leases):
    """typing_start() and typing_stop() of presence.store.PresenceStore."""

    async def typing_start(
        self, *, room_id: int, room_slug: str, user_id: int, username: str, ttl_seconds: float
    ) -> None:
        member = typing_member(room_id, room_slug, user_id, username)
        # Kept as long as presence keys at least: a sweep may come a few
        # seconds after the typing lapsed, and the key must still be there.
        keep_ms = 2 * max(int(ttl_seconds * 1000), self._ttl_ms())
        await self.shards.call(
            "typing_start",
            self.room_shard(room_id),
            lambda c: c.scripts["typing_start"](
                keys=[self.room_key(room_id), self.due_key],
                args=[room_id, member, int(ttl_seconds * 1000), keep_ms],
            ),
            None,
        )

    async def typing_stop(
        self, *, room_id: int, room_slug: str, user_id: int, username: str
    ) -> bool:
        member = typing_member(room_id, room_slug, user_id, username)
        # If Redis does not answer, say it ended here: a second `false` is
        # harmless, a missing one leaves a typist shown forever.
        removed = await self.shards.call(
            "typing_stop",
            self.room_shard(room_id),
            lambda c: c.scripts["typing_stop"](
                keys=[self.room_key(room_id), self.due_key], args=[room_id, member]
            ),
            1,
        )
        return bool(removed)
