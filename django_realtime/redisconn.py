"""
Provides the package's Redis clients for its own keys (topic history, the
shared limits): `sync_client(url)` for synchronous code and
`async_client(url)` for the running event loop. Presence keeps its own pool
(presence/redis_store.py), tuned to its heartbeats.

Every call is bounded by TIMEOUT_SECONDS: a Redis that does not answer
costs that long at most, and callers decide what an outage means.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any

import redis
import redis.asyncio

TIMEOUT_SECONDS = 2.0
MAX_CONNECTIONS = 50

_sync: dict[str, redis.Redis] = {}
_sync_lock = threading.Lock()
_async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Any]] = (
    weakref.WeakKeyDictionary()
)

# What a failed call raises, for callers to catch.
ERRORS = (redis.RedisError, TimeoutError, OSError)


def sync_client(url: str) -> redis.Redis:
    client = _sync.get(url)
    if client is None:
        with _sync_lock:
            client = _sync.get(url) or redis.Redis.from_url(
                url,
                socket_timeout=TIMEOUT_SECONDS,
                socket_connect_timeout=TIMEOUT_SECONDS,
                health_check_interval=30,
                max_connections=MAX_CONNECTIONS,
            )
            _sync[url] = client
    return client


def async_client(url: str) -> Any:
    """The running loop's client (redis.asyncio connections belong to the
    loop that opened them)."""
    loop = asyncio.get_running_loop()
    clients = _async.setdefault(loop, {})
    client = clients.get(url)
    if client is None:
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=TIMEOUT_SECONDS,
            socket_timeout=TIMEOUT_SECONDS,
            socket_connect_timeout=TIMEOUT_SECONDS,
            health_check_interval=30,
        )
        client = clients[url] = redis.asyncio.Redis.from_pool(pool)
    return client


class Script:
    """A Lua script, registered once per client."""

    def __init__(self, source: str):
        self.source = source
        self._scripts: dict[int, tuple[Any, Any]] = {}  # id(client) -> (client, script)

    def _on(self, client: Any) -> Any:
        held = self._scripts.get(id(client))
        if held is None or held[0] is not client:
            held = self._scripts[id(client)] = (client, client.register_script(self.source))
        return held[1]

    def run(self, url: str, keys: list[str], args: list[Any]) -> Any:
        return self._on(sync_client(url))(keys=keys, args=args)

    async def arun(self, url: str, keys: list[str], args: list[Any]) -> Any:
        async with asyncio.timeout(TIMEOUT_SECONDS * 2):
            return await self._on(async_client(url))(keys=keys, args=args)
