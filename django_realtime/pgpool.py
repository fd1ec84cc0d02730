"""
Provides execute(), fetchone() and fetchall(): one SQL statement on an
asynchronous psycopg connection of the running event loop, so the hot
statements (chat.services' send and join, chat.streams' last seq, replay
pages and gap fills, the token lookup of a handshake) cost no hop to a
thread and no ORM compiling. Only a pool: what to run, and
what its rows mean, is its callers'. `applies(alias)` says whether a
database is one it serves (PostgreSQL with psycopg 3, the `postgres` extra);
elsewhere callers take the ORM, and psycopg is never imported.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import weakref
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, connections

from django_realtime.conf import realtime_settings
from django_realtime.errors import Unavailable

if TYPE_CHECKING:
    import psycopg

# Options of Django's connection that belong to its synchronous cursors.
_SYNC_ONLY_OPTIONS = ("cursor_factory", "context")


class _Connections:
    """Up to `size` autocommit connections of one event loop, opened on demand."""

    def __init__(self, alias: str, size: int):
        self.alias = alias
        self.idle: list[psycopg.AsyncConnection] = []
        self.slots = asyncio.Semaphore(size)

    async def execute(self, sql: str, params: dict, *, every: bool = False) -> Any:
        async with self.slots:
            conn = self.idle.pop() if self.idle else await self._open()
            try:
                async with asyncio.timeout(
                    realtime_settings.DATABASE_STATEMENT_TIMEOUT_MS / 1000 + 2
                ):
                    cursor = await conn.execute(sql, params)
                    row = await (cursor.fetchall() if every else cursor.fetchone())
            except BaseException:
                conn.pgconn.finish()  # in an unknown state: never reused
                raise
            self.idle.append(conn)
            return row

    async def _open(self) -> psycopg.AsyncConnection:
        import psycopg

        params = connections[self.alias].get_connection_params()
        for name in _SYNC_ONLY_OPTIONS:
            params.pop(name, None)
        # Prepared at their first run: PostgreSQL parses and plans each hot
        # statement once per connection instead of once per post (Django
        # leaves its own connections unprepared, for poolers' sake).
        params["prepare_threshold"] = 0 if realtime_settings.DATABASE_PREPARED_STATEMENTS else None
        return await psycopg.AsyncConnection.connect(**params, autocommit=True)

    def finish(self) -> None:
        """Close the connections of a loop that has ended (no loop to await on)."""
        for conn in self.idle:
            conn.pgconn.finish()
        self.idle.clear()


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Connections]] = (
    weakref.WeakKeyDictionary()
)


def _pool(alias: str) -> _Connections:
    loop = asyncio.get_running_loop()
    pools = _pools.get(loop)
    if pools is None:
        for old_loop, old in list(_pools.items()):
            if old_loop.is_closed():  # a test's loop, or a server's that stopped
                for stale in old.values():
                    stale.finish()
                del _pools[old_loop]
        pools = _pools[loop] = {}
    pool = pools.get(alias)
    if pool is None:
        pool = pools[alias] = _Connections(alias, realtime_settings.DATABASE_ASYNC_CONNECTIONS)
    return pool


async def execute(alias: str, sql: str, params: dict, *, every: bool = False) -> Any:
    """Run `sql` in autocommit on database `alias`; its first row, or None
    (`every`: all its rows, a list). Raises psycopg's errors (and
    TimeoutError) as they come."""
    return await _pool(alias).execute(sql, params, every=every)


def applies(alias: str) -> bool:
    """Whether statements for database `alias` may run here (PostgreSQL,
    psycopg 3 installed: a site on psycopg2 takes the ORM)."""
    return connections[alias].vendor == "postgresql" and _has_psycopg()


@functools.cache
def _has_psycopg() -> bool:
    return importlib.util.find_spec("psycopg") is not None


async def fetchone(alias: str, sql: str, params: dict) -> tuple | None:
    """execute(), its errors as the ORM's callers know them: a constraint
    violation is Django's IntegrityError, the database away UNAVAILABLE."""
    return await _answer(execute(alias, sql, params))


async def fetchall(alias: str, sql: str, params: dict) -> list[tuple]:
    """fetchone(), every row."""
    return await _answer(execute(alias, sql, params, every=True))


async def _answer(running: Any) -> Any:
    import psycopg

    try:
        return await running
    except psycopg.IntegrityError as exc:
        raise IntegrityError(str(exc)) from exc
    except (psycopg.Error, OSError, TimeoutError) as exc:
        raise Unavailable("storage is unavailable; retry shortly") from exc
