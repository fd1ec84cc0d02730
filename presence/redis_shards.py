"""
Provides Shards, the Redis presence store's links to its shards: per event
loop and shard one bounded connection pool with presence.scripts registered
on it, and `call()`: every call bounded, a failure logged and answered with
a default (presence never takes a consumer down).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.commands.core import AsyncScript

from django_realtime import redisconn

from . import conf, scripts

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class Client:
    """One shard's client on one event loop, with the scripts registered on it."""

    redis: Redis
    scripts: dict[str, AsyncScript]
    # A connection's calls (open, join, exit, close) go out with whatever
    # else the process sends the shard meanwhile: one round trip for a join
    # storm's burst (redisconn.Batched).
    batch: redisconn.Batched

    async def run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self.batch.script(self.scripts[name], keys, args)


class Shards:
    """The shards at `urls` (one Redis each), as seen from any event loop."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        # redis.asyncio connections belong to the loop that opened them.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, Client]] = (
            weakref.WeakKeyDictionary()
        )

    def client(self, shard: int) -> Client:
        loop = asyncio.get_running_loop()
        clients = self._clients.setdefault(loop, {})
        client = clients.get(shard)
        if client is None:
            timeout = conf.redis_timeout_seconds()
            pool = BlockingConnectionPool.from_url(
                self.urls[shard],
                max_connections=conf.redis_max_connections(),
                timeout=timeout,  # wait this long for a free connection, no longer
                # Each call is bounded by call(); the socket allows the longest.
                socket_timeout=conf.upkeep_timeout_seconds(),
                socket_connect_timeout=timeout,
                health_check_interval=30,
                decode_responses=True,
            )
            redis = Redis.from_pool(pool)
            client = Client(
                redis,
                {name: redis.register_script(src) for name, src in scripts.ALL.items()},
                redisconn.batched(redis),
            )
            clients[shard] = client
        return client

    async def call(
        self,
        what: str,
        shard: int,
        fn: Callable[[Client], Awaitable[T]],
        default: T,
        *,
        timeout: float | None = None,
    ) -> T:
        """One Redis call on one shard, bounded by `timeout`
        (PRESENCE_REDIS_TIMEOUT_SECONDS unless given); a failure is logged and
        answered with `default`."""
        try:
            async with asyncio.timeout(timeout or conf.redis_timeout_seconds()):
                return await fn(self.client(shard))
        except Exception as exc:  # noqa: BLE001 - presence never takes a consumer down
            logger.warning("presence: %s failed on shard %d: %r", what, shard, exc)
            return default

    async def aclose(self) -> None:
        """Close the running loop's clients."""
        clients = self._clients.pop(asyncio.get_running_loop(), {})
        for client in clients.values():
            with contextlib.suppress(Exception):
                await client.redis.aclose()
