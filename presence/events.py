"""
Provides presence on the channel layer (through django_realtime.bus):
`presence` diffs of transitions, sent to the room's group (merged when they
come thick and fast), and `typing` frames, including the `is_typing: false`
of a typist whose own process could not send it.
"""

import asyncio
from dataclasses import dataclass, field
from typing import Any

from django_realtime import bus
from django_realtime.payloads import user_payload_of

from . import conf
from .store import Change, TypingLapse

# Layer event types, in their own namespace ("presence.*").
DIFF = "presence.diff"
TYPING = "presence.typing"


def diff_payload(room_slug: str, changes: list[Change]) -> dict:
    joins = [
        {"user": user_payload_of(c.user_id, c.username), "status": c.status}
        for c in changes
        if c.status is not None
    ]
    leaves = [{"user": user_payload_of(c.user_id, c.username)} for c in changes if c.status is None]
    return {"type": "presence", "room": room_slug, "joins": joins, "leaves": leaves}


@dataclass
class _Batch:
    room_slug: str
    changes: dict[int, Change] = field(default_factory=dict)  # the last change per user
    joiners: dict[str, int] = field(default_factory=dict)  # joining channel -> its user


_pending: dict[int, _Batch] = {}
_last_sent: dict[int, float] = {}


async def broadcast_changes(
    *, room_id: int, room_slug: str, changes: list[Change], skip_channel: str | None = None
) -> None:
    """The diff to the room. `skip_channel` is the connection whose join this
    announces: it is not told of itself (its `joined` list has it already).

    The first diff after a quiet spell goes at once; later ones within
    PRESENCE_DIFF_COALESCE_SECONDS are merged (the last change of each user
    wins) and sent when the window ends."""
    if not changes:
        return
    loop = asyncio.get_running_loop()
    window = conf.diff_coalesce_seconds()
    joiners = {skip_channel: changes[0].user_id} if skip_channel else {}
    batch = _pending.get(room_id)
    if batch is None and loop.time() - _last_sent.get(room_id, -window) >= window:
        _last_sent[room_id] = loop.time()
        await _send(room_id, room_slug, changes, joiners)
        return
    if batch is None:
        batch = _pending[room_id] = _Batch(room_slug=room_slug)
        delay = max(0.0, _last_sent.get(room_id, 0.0) + window - loop.time())
        loop.call_later(delay, lambda: asyncio.ensure_future(_flush(room_id)))
    for change in changes:
        batch.changes[change.user_id] = change
    batch.joiners.update(joiners)


async def _flush(room_id: int) -> None:
    batch = _pending.pop(room_id, None)
    if batch is None:
        return
    _last_sent[room_id] = asyncio.get_running_loop().time()
    if len(_last_sent) > 10_000:  # forget quiet rooms; they start afresh
        horizon = _last_sent[room_id] - 60
        for stale in [r for r, t in _last_sent.items() if t < horizon]:
            del _last_sent[stale]
    await _send(room_id, batch.room_slug, list(batch.changes.values()), batch.joiners)


async def _send(
    room_id: int, room_slug: str, changes: list[Change], joiners: dict[str, int]
) -> None:
    event = {"type": DIFF, "room_id": room_id, "payload": diff_payload(room_slug, changes)}
    if joiners:
        event["joiners"] = joiners
    await bus.send(bus.room_group(room_id), event)


async def broadcast_typing(
    *, room_id: int, room_slug: str, user: dict[str, Any], is_typing: bool
) -> None:
    """`{"type":"typing","room","user","is_typing"}` to the room."""
    payload = {"type": "typing", "room": room_slug, "user": user, "is_typing": is_typing}
    await bus.send(
        bus.room_group(room_id), {"type": TYPING, "room_id": room_id, "payload": payload}
    )


async def broadcast_typing_lapse(lapse: TypingLapse) -> None:
    await broadcast_typing(
        room_id=lapse.room_id,
        room_slug=lapse.room_slug,
        user=user_payload_of(lapse.user_id, lapse.username),
        is_typing=False,
    )
