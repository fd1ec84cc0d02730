"""
Provides the package's Redis clients for its own keys (`sync_client`,
`async_client`, every call bounded by TIMEOUT_SECONDS) and its Lua scripts
(`Script`). Which shard holds what is django_realtime.shards; calls sent
together, django_realtime.batching.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import weakref
from typing import Any

import redis
import redis.asyncio

from .batching import Batched, batched, settle
from .shards import pick, room_shard, shard_index, user_shard

# Named here too for the modules that reach them through this one (presence,
# limits, chat.services.batches).
__all__ = [
    "ERRORS",
    "HEALTH_CHECK_SECONDS",
    "MAX_CONNECTIONS",
    "TIMEOUT_SECONDS",
    "Batched",
    "Script",
    "async_client",
    "batched",
    "pick",
    "room_shard",
    "settle",
    "shard_index",
    "sync_client",
    "user_shard",
]

# A Redis that does not answer costs a caller this long at most, connect and
# call alike: past it, an outage (callers fall back or refuse); as presence's
# PRESENCE_REDIS_TIMEOUT_SECONDS, well over a healthy round trip.
TIMEOUT_SECONDS = 2.0
# Connections per URL and process (per event loop for the async pool, whose
# callers wait for one, for at most TIMEOUT_SECONDS, rather than open more).
MAX_CONNECTIONS = 50
# An idle connection is PINGed before it is used again after this long, so a
# connection a restarted Redis or a NAT dropped fails before a real call.
HEALTH_CHECK_SECONDS = 30

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
                health_check_interval=HEALTH_CHECK_SECONDS,
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
            health_check_interval=HEALTH_CHECK_SECONDS,
        )
        client = clients[url] = redis.asyncio.Redis.from_pool(pool)
    return client


class Script:
    """A Lua script, registered once per client."""

    def __init__(self, source: str):
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8")).hexdigest()
        self.script = source  # as redis-py's scripts name it, for Batched.script
        self._scripts: dict[int, tuple[Any, Any]] = {}  # id(client) -> (client, script)

    def _on(self, client: Any) -> Any:
        held = self._scripts.get(id(client))
        if held is None or held[0] is not client:
            held = self._scripts[id(client)] = (client, client.register_script(self.source))
        return held[1]

    def run(self, url: str, keys: list[str], args: list[Any]) -> Any:
        return self._on(sync_client(url))(keys=keys, args=args)

    async def arun(self, url: str, keys: list[str], args: list[Any]) -> Any:
        """Sent with the loop's other calls to the same Redis (Batched)."""
        async with asyncio.timeout(TIMEOUT_SECONDS * 2):
            return await batched(async_client(url)).script(self, keys, args)

    async def arun_many(self, url: str, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """arun() for each (keys, args), queued at once: one pipeline, one
        round trip (Batched); raises the first failure."""
        async with asyncio.timeout(TIMEOUT_SECONDS * 2):
            return await batched(async_client(url)).scripts(self, calls)
