"""
Provides store(): the WebSocket's one-statement posts of one process, stored
together while the process's previous statement is in flight (BATCH_SQL: one
statement for the batch, each post its own seq, idempotency and refusal). A
lone post runs SEND_SQL at once, as it would without batching.
"""

import asyncio
import functools
import json
import logging
import weakref
from typing import Any

from django.db import IntegrityError, connections

from django_realtime import metrics, pgpool
from django_realtime.background import spawn
from django_realtime.batching import settle
from django_realtime.errors import Unavailable

from ..models import Membership, Message, Room

logger = logging.getLogger(__name__)


async def store(alias: str, send_sql: str, params: dict) -> tuple | None:
    """SEND_SQL's row for one post: run at once when the process has no post
    statement in flight, else with the posts that queue behind it."""
    return await _batches(alias, send_sql).store(params)


class _Batches:
    """One event loop's posts to one database: at most one statement in flight."""

    def __init__(self, alias: str, send_sql: str):
        self.alias, self.send_sql = alias, send_sql
        self.busy = False
        self.queued: list[tuple[dict, asyncio.Future]] = []

    async def store(self, params: dict) -> tuple | None:
        if self.busy:
            future = asyncio.get_running_loop().create_future()
            self.queued.append((params, future))
            return await future
        self.busy = True
        metrics.POST_BATCH_SIZE.observe(1)
        try:
            return await pgpool.fetchone(self.alias, self.send_sql, params)
        finally:
            self._next()

    def _next(self) -> None:
        """The statement ended: store what queued meanwhile, or go idle."""
        if not self.queued:
            self.busy = False
            return
        batch, self.queued = self.queued, []
        spawn(self._store(batch))

    async def _store(self, batch: list[tuple[dict, asyncio.Future]]) -> None:
        try:
            outcomes = await self._outcomes([params for params, _ in batch])
        except BaseException as exc:  # noqa: BLE001 - no caller may wait forever
            outcomes = [exc] * len(batch)
            if isinstance(exc, asyncio.CancelledError):
                for _, future in batch:
                    future.cancel()
                raise
        finally:
            self._next()
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            settle(future, outcome)

    async def _outcomes(self, posts: list[dict]) -> list[Any]:
        """Each post's row (or its exception): one statement for them all; if
        that fails (a racing twin's client_id, a deadlock), it stored nothing,
        and each post runs alone for its own answer."""
        metrics.POST_BATCH_SIZE.observe(len(posts))
        if len(posts) > 1:
            try:
                rows = await pgpool.fetchall(self.alias, batch_sql(self.alias), batch_params(posts))
            except Unavailable as exc:
                if not _deadlocked(exc):
                    return [Unavailable(exc.message) for _ in posts]
                self._split(posts, exc)
            except IntegrityError as exc:
                self._split(posts, exc)
            else:
                by_ord = {row[0]: row[1:] for row in rows}
                return [by_ord.get(index) for index in range(len(posts))]
        outcomes: list[Any] = []
        for params in posts:
            try:
                outcomes.append(await pgpool.fetchone(self.alias, self.send_sql, params))
            except Exception as exc:  # noqa: BLE001 - the post's own caller raises it
                outcomes.append(exc)
        return outcomes

    def _split(self, posts: list[dict], exc: Exception) -> None:
        logger.info("a batch of %d posts stored nothing (%r): each goes alone", len(posts), exc)
        metrics.POST_BATCHES_SPLIT.inc()


def _deadlocked(exc: Unavailable) -> bool:
    """Whether the database broke a deadlock by failing the batch (which
    stored nothing), rather than being away."""
    import psycopg

    return isinstance(exc.__cause__, psycopg.errors.DeadlockDetected)


def batch_params(posts: list[dict]) -> dict:
    """The batch's parameters: its posts as one JSON text (encoded in C;
    psycopg dumps arrays element by element in Python)."""
    rows = [
        {
            "ord": index,
            "user_id": p["user_id"],
            "slug": p["slug"],
            "client_id": str(p["client_id"]),
            "content": p["content"],
            "now": p["now"].isoformat(),
        }
        for index, p in enumerate(posts)
    ]
    return {"posts": json.dumps(rows, ensure_ascii=False), "role": posts[0]["role"]}


_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Batches]] = (
    weakref.WeakKeyDictionary()
)


def _batches(alias: str, send_sql: str) -> _Batches:
    held = _loops.setdefault(asyncio.get_running_loop(), {})
    batches = held.get(alias)
    if batches is None:
        batches = held[alias] = _Batches(alias, send_sql)
    return batches


# SEND_SQL for many posts (messages.SEND_SQL says what each part does). Rows:
# one per post that names an existing room, led by the post's ord (its index
# in the batch): the access facts, and the new message's id and seq when
# stored. A post's client_id already stored, or used by an earlier post of the
# batch, stores nothing (the caller finds the original). The rooms are locked
# in id order first, so two processes' batches never deadlock on them; each
# room's posts take consecutive seqs in arrival order.
_ROOM, _MEMBERSHIP, _MESSAGE = (
    Room._meta.db_table,
    Membership._meta.db_table,
    Message._meta.db_table,
)


@functools.cache
def batch_sql(alias: str) -> str:
    """BATCH_SQL for database `alias`, its user ids typed as the site's user model's."""
    user_id = Membership._meta.get_field("user").db_type(connections[alias])
    return BATCH_SQL.replace("user_id bigint", f"user_id {user_id}")


BATCH_SQL = f"""
WITH input AS (
    SELECT * FROM json_to_recordset(%(posts)s::json)
        AS i(ord int, user_id bigint, slug text, client_id uuid, content text, now timestamptz)
), access AS (
    SELECT i.*, r.id AS room_id, r.is_private, m.id AS membership_id,
           coalesce(m.is_banned, false) AS is_banned, coalesce(m.is_muted, false) AS is_muted
    FROM input i
    JOIN {_ROOM} r ON r.slug = i.slug
    LEFT JOIN {_MEMBERSHIP} m ON m.room_id = r.id AND m.user_id = i.user_id
), allowed AS (
    SELECT DISTINCT ON (a.user_id, a.client_id) a.*
    FROM access a
    WHERE NOT a.is_banned AND NOT a.is_muted
      AND (NOT a.is_private OR a.membership_id IS NOT NULL)
      AND NOT EXISTS (
          SELECT 1 FROM {_MESSAGE} WHERE user_id = a.user_id AND client_id = a.client_id
      )
    ORDER BY a.user_id, a.client_id, a.ord
), numbered AS (
    SELECT al.*, row_number() OVER (PARTITION BY al.room_id ORDER BY al.ord) AS n,
           count(*) OVER (PARTITION BY al.room_id) AS in_room
    FROM allowed al
), locked AS MATERIALIZED (
    SELECT r.id FROM {_ROOM} r
    WHERE r.id IN (SELECT room_id FROM numbered)
    ORDER BY r.id
    FOR UPDATE
), bump AS (
    UPDATE {_ROOM} AS r SET last_seq = r.last_seq + c.in_room
    FROM (SELECT DISTINCT room_id, in_room FROM numbered) c, locked l
    WHERE r.id = c.room_id AND l.id = r.id
    RETURNING r.id, r.last_seq
), placed AS (
    SELECT nb.*, b.last_seq - nb.in_room + nb.n AS seq
    FROM numbered nb JOIN bump b ON b.id = nb.room_id
), stored AS (
    INSERT INTO {_MESSAGE} (room_id, seq, user_id, client_id, content, created_at, is_deleted)
    SELECT room_id, seq, user_id, client_id, content, now, false FROM placed
    RETURNING id, room_id, seq
), read_position AS (
    INSERT INTO {_MEMBERSHIP}
        (room_id, user_id, role, is_banned, is_muted, last_read_seq, joined_at)
    SELECT room_id, user_id, %(role)s, false, false, max(seq), min(now)
    FROM placed GROUP BY room_id, user_id
    ON CONFLICT (room_id, user_id) DO UPDATE
    SET last_read_seq = GREATEST({_MEMBERSHIP}.last_read_seq, EXCLUDED.last_read_seq)
)
SELECT a.ord, a.room_id, a.is_private, a.membership_id, a.is_banned, a.is_muted, s.id, s.seq
FROM access a
LEFT JOIN placed p ON p.ord = a.ord
LEFT JOIN stored s ON s.room_id = p.room_id AND s.seq = p.seq
"""
