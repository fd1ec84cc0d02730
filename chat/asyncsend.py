"""
Provides message_send(): chat.services.message_send for the WebSocket, with
its one-statement common case (services.SEND_SQL) run on the event loop over
an asynchronous psycopg connection, so a post costs no hop to a thread.

The same statement, the same rate limit, the same payload and broadcast as
the synchronous service. Whatever the statement does not store (no such room,
a refusal, a retry of a stored client_id, a racing twin) goes to the
synchronous service, which runs it again and says why or returns the
original; so do mentions and databases other than PostgreSQL.
"""

import asyncio
import weakref
from typing import Any

import psycopg
from django.contrib.auth.models import AbstractBaseUser
from django.db import connections

from django_realtime.conf import realtime_settings
from django_realtime.errors import Unavailable

from . import events, services
from .asyncdb import db
from .ratelimit import limiter

# Options of Django's connection that belong to its synchronous cursors.
_SYNC_ONLY_OPTIONS = ("cursor_factory", "context")


class _Connections:
    """Up to `size` autocommit connections of one event loop, opened on demand."""

    def __init__(self, size: int):
        self.idle: list[psycopg.AsyncConnection] = []
        self.slots = asyncio.Semaphore(size)

    async def execute(self, sql: str, params: dict) -> tuple | None:
        async with self.slots:
            conn = self.idle.pop() if self.idle else await self._open()
            try:
                async with asyncio.timeout(
                    realtime_settings.DATABASE_STATEMENT_TIMEOUT_MS / 1000 + 2
                ):
                    cursor = await conn.execute(sql, params)
                    row = await cursor.fetchone()
            except BaseException:
                conn.pgconn.finish()  # in an unknown state: never reused
                raise
            self.idle.append(conn)
            return row

    @staticmethod
    async def _open() -> psycopg.AsyncConnection:
        params = connections[services.db_alias()].get_connection_params()
        for name in _SYNC_ONLY_OPTIONS:
            params.pop(name, None)
        return await psycopg.AsyncConnection.connect(**params, autocommit=True)

    def finish(self) -> None:
        """Close the connections of a loop that has ended (no loop to await on)."""
        for conn in self.idle:
            conn.pgconn.finish()
        self.idle.clear()


_pools: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Connections]" = (
    weakref.WeakKeyDictionary()
)


def _pool() -> _Connections:
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is None:
        for old_loop, old in list(_pools.items()):
            if old_loop.is_closed():  # a test's loop, or a server's that stopped
                old.finish()
                del _pools[old_loop]
        pool = _pools[loop] = _Connections(realtime_settings.DATABASE_ASYNC_CONNECTIONS)
    return pool


async def message_send(
    *, user: AbstractBaseUser, slug: Any, content: Any, client_id: Any
) -> services.SendResult:
    """services.message_send, on the event loop when it can be."""
    general = {"user": user, "slug": slug, "content": content, "client_id": client_id}
    if not services.one_statement_applies(content):
        return await db(services.message_send, **general)
    content = services.clean_content(content)
    client_uuid = services.clean_client_id(client_id)
    rate_key, now, params = services.one_statement_prepare(
        user=user, slug=slug, content=content, client_uuid=client_uuid
    )
    try:
        row = await _pool().execute(services.SEND_SQL, params)
    except psycopg.IntegrityError:
        row = None  # a racing twin stored this client_id: the service finds it
    except (psycopg.Error, OSError, TimeoutError) as exc:
        limiter.refund(rate_key)
        raise Unavailable("storage is unavailable; retry shortly") from exc
    if row is None or row[5] is None:
        limiter.refund(rate_key)  # the service counts it again if it stores it
        return await db(services.message_send, **general)
    result = services.stored_result(
        user=user, slug=slug, content=content, client_uuid=client_uuid, now=now, row=row
    )
    events.broadcast_message(room_id=result.message.room_id, payload=result.payload)
    return result
