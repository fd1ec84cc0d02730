"""
Provides a room's messages as a sequence for django_realtime.delivery: the
cursor of one receiver (a WebSocket connection's joined room, an SSE stream)
reading gaps from the database, and the replay a join or a stream starts
with, a page at a time. The WebSocket consumer and the SSE room stream share both.
"""

import functools
from collections.abc import AsyncIterator

from django.contrib.auth import get_user_model
from django.db import connections, router
from django.db.models import Field

from django_realtime import pgpool
from django_realtime.asyncdb import db
from django_realtime.conf import realtime_settings
from django_realtime.delivery import Entry, Frame, SeqCursor
from django_realtime.errors import NotFound, Unavailable
from django_realtime.payloads import user_payload_of

from . import events, selectors
from .models import Message, Room


def row_entries(rows: list[selectors.MessageRow], room_slug: str) -> list[Entry]:
    """Messages (selectors.message_rows_since) as delivery entries; a deleted
    one is a seq with nothing to show."""
    return [
        Entry(
            seq,
            None
            if deleted
            else events.message_frame(
                room_slug=room_slug,
                id=pk,
                seq=seq,
                client_id=client_id,
                user=user_payload_of(user_id, username),
                content=content,
                created_at=created_at,
            ),
        )
        for seq, pk, client_id, user_id, username, content, created_at, deleted in rows
    ]


def room_cursor(*, room_id: int, room_slug: str) -> SeqCursor:
    """A cursor over the room's seqs that fills its gaps from the database."""

    async def fetch(after: int, until: int) -> list[Entry]:
        rows = await message_rows(
            room_id=room_id,
            since=after,
            until=until,
            limit=realtime_settings.CHAT_RESUME_MAX_MESSAGES,
        )
        return row_entries(rows, room_slug)

    return SeqCursor(fetch=fetch)


# A replay reads the database this many seqs at a time, and sends a page as
# the socket takes it: a resume costs the server a page and the socket's low
# water mark, not the whole gap.
REPLAY_PAGE = 20


def resume_from(*, since: int | None, last_seq: int) -> int:
    """The seq after which a receiver starting at `since` (None: at the end)
    is replayed: at most the newest CHAT_RESUME_MAX_MESSAGES (`truncated`
    tells the client when it skipped some), never past the end."""
    if since is None or since >= last_seq:
        return last_seq
    return max(since, last_seq - realtime_settings.CHAT_RESUME_MAX_MESSAGES)


async def replay_page(
    *, room_id: int, room_slug: str, after: int, last_seq: int
) -> tuple[list[Entry], int]:
    """The entries of the next page of a replay: those after `after`, at most
    REPLAY_PAGE seqs on and not past `last_seq`; and the seq the page ends at.
    Raises Unavailable when the database is away."""
    until = min(after + REPLAY_PAGE, last_seq)
    rows = await message_rows(room_id=room_id, since=after, until=until, limit=REPLAY_PAGE)
    return row_entries(rows, room_slug), until


async def message_rows(
    *, room_id: int, since: int, until: int, limit: int
) -> list[selectors.MessageRow]:
    """selectors.message_rows_since from the event loop: on PostgreSQL one
    statement over pgpool (a resume's replay, a gap fill), elsewhere the
    selector in a thread. Raises Unavailable when the database is away."""
    alias = router.db_for_read(Message)
    if not pgpool.applies(alias):
        return await db(
            selectors.message_rows_since, room_id=room_id, since=since, until=until, limit=limit
        )
    params = {"room_id": room_id, "since": since, "until": until, "limit": limit}
    rows = await pgpool.fetchall(alias, _rows_sql(alias), params)
    rows.reverse()
    return rows


@functools.cache
def _rows_sql(alias: str) -> str:
    """message_rows_since's query, with the site's user table and username column."""
    quote = connections[alias].ops.quote_name
    user_meta = get_user_model()._meta
    username = user_meta.get_field(get_user_model().USERNAME_FIELD)
    assert isinstance(username, Field)  # a concrete field, as USERNAME_FIELD must be
    return (
        "SELECT m.seq, m.id, m.client_id, m.user_id, "
        f"u.{quote(username.column)}, m.content, m.created_at, m.is_deleted"
        f" FROM {quote(Message._meta.db_table)} m"
        f" JOIN {quote(user_meta.db_table)} u ON u.{quote(str(user_meta.pk.column))} = m.user_id"
        " WHERE m.room_id = %(room_id)s AND m.seq > %(since)s AND m.seq <= %(until)s"
        " ORDER BY m.seq DESC LIMIT %(limit)s"
    )


async def last_seq(*, room_id: int) -> int:
    """The room's last seq, read on the event loop where PostgreSQL allows
    (django_realtime.pgpool). NOT_FOUND for a room deleted meanwhile."""
    alias = router.db_for_read(Room)
    if not pgpool.applies(alias):
        found = await db(selectors.rooms_last_seq, room_ids=[room_id])
    else:
        row = await pgpool.fetchone(alias, LAST_SEQ_SQL, {"room_id": room_id})
        found = {room_id: row[0]} if row is not None else {}
    if room_id not in found:
        raise NotFound("no such room")
    return found[room_id]


LAST_SEQ_SQL = f"SELECT last_seq FROM {Room._meta.db_table} WHERE id = %(room_id)s"


def start(cursor: SeqCursor, *, since: int | None, last_seq: int) -> None:
    """Position a new receiver's cursor where its replay begins."""
    cursor.start(since=since, last=last_seq)
    cursor.sent(resume_from(since=since, last_seq=last_seq))


async def replay(
    cursor: SeqCursor, *, room_id: int, room_slug: str, last_seq: int
) -> AsyncIterator[list[Frame]]:
    """The frames from the cursor up to `last_seq`, a page at a time, each
    read once the receiver asks for it (after sending the one before). Ends
    early when the database is away: the receiver's next catch-up sends the
    rest, as it does for any gap."""
    while not cursor.is_sent(last_seq):
        try:
            page, until = await replay_page(
                room_id=room_id, room_slug=room_slug, after=cursor.delivered, last_seq=last_seq
            )
        except Unavailable:
            return
        frames = cursor.take(page)
        cursor.sent(max(cursor.delivered, until))
        yield frames


def truncated(*, since: int | None, last_seq: int) -> bool:
    """Whether a resume from `since` skips messages (more than the replay cap)."""
    return since is not None and last_seq - since > realtime_settings.CHAT_RESUME_MAX_MESSAGES
