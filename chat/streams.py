"""
Provides a room's messages as a sequence for django_realtime.delivery: the
cursor of one receiver (a WebSocket connection's joined room, an SSE stream)
reading gaps from the database, and the backlog a join or a stream starts
with. The WebSocket consumer and the SSE room stream share both.
"""

from django_realtime.asyncdb import db
from django_realtime.conf import realtime_settings
from django_realtime.delivery import Entry, SeqCursor

from . import events, selectors
from .models import Message


def entries(rows: list[Message], room_slug: str) -> list[Entry]:
    """Messages as delivery entries; a deleted one is a seq with nothing to show."""
    return [
        Entry(m.seq, None if m.is_deleted else events.message_payload(m, room_slug)) for m in rows
    ]


def room_cursor(*, room_id: int, room_slug: str) -> SeqCursor:
    """A cursor over the room's seqs that fills its gaps from the database."""

    async def fetch(after: int, until: int) -> list[Entry]:
        rows = await db(
            selectors.messages_since,
            room_id=room_id,
            since=after,
            until=until,
            limit=realtime_settings.CHAT_RESUME_MAX_MESSAGES,
        )
        return entries(rows, room_slug)

    return SeqCursor(fetch=fetch)


def _backlog(*, room_id: int, since: int | None) -> tuple[list[Message], int]:
    last_seq = selectors.room_last_seq(room_id=room_id)
    if since is None or since >= last_seq:
        return [], last_seq
    rows = selectors.messages_since(
        room_id=room_id,
        since=since,
        until=last_seq,
        limit=realtime_settings.CHAT_RESUME_MAX_MESSAGES,
    )
    return rows, last_seq


async def backlog(*, room_id: int, room_slug: str, since: int | None) -> tuple[list[Entry], int]:
    """What a receiver starting at `since` (None: at the end) must be sent
    first, and the room's last seq; the newest CHAT_RESUME_MAX_MESSAGES at most
    (`truncated` tells the client when `last_seq - since` is more)."""
    rows, last_seq = await db(_backlog, room_id=room_id, since=since)
    return entries(rows, room_slug), last_seq


def truncated(*, since: int | None, last_seq: int) -> bool:
    """Whether a resume from `since` skips messages (more than the replay cap)."""
    return since is not None and last_seq - since > realtime_settings.CHAT_RESUME_MAX_MESSAGES
