"""
Provides the package's Redis clients for its own keys (`sync_client`,
`async_client`, every call bounded by TIMEOUT_SECONDS) and the one rule of
which shard holds what: channels_redis' own ring applied to the name the
layer hashes for the data's group, so a dead shard costs only its rooms,
users and topics. Why: docs/architecture.md, "redisconn".
"""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import threading
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis
import redis.asyncio
from redis.exceptions import NoScriptError

from . import namespace
from .bus import room_group, topic_group, user_group

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


# --- shards ---------------------------------------------------------------------------
def shard_index(name: str, count: int) -> int:
    """The shard of `name` among `count`: channels_redis' ring
    (channels_redis.utils._consistent_hash), so that a group's data lands
    where the layer puts the group."""
    if count <= 1:
        return 0
    return int((binascii.crc32(name.encode("utf8")) & 0xFFF) / (4096 / float(count)))


def layer_group_name(group: str) -> str:
    """The name the default channel layer hashes to place `group` on one of
    its hosts (django_realtime.namespace.group_hash_prefix)."""
    return namespace.group_hash_prefix() + group


def room_shard(room_id: int, count: int) -> int:
    """The shard of a room's presence and typing: that of its layer group."""
    return shard_index(layer_group_name(room_group(room_id)), count)


def user_shard(user_id: int, count: int) -> int:
    """The shard of a user's data that spans rooms: that of their layer group."""
    return shard_index(layer_group_name(user_group(user_id)), count)


def topic_shard(topic: str, count: int) -> int:
    """The shard of a topic's history: that of its doorbell group."""
    return shard_index(layer_group_name(topic_group(topic)), count)


def pick(urls: Sequence[str], index: int) -> str:
    return urls[index if index < len(urls) else 0]


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


class Outbox:
    """Calls from concurrent callers, sent together: a call queues its item
    and waits; one sender task takes everything queued by then and hands it
    to `send`, which settles each item's future (`settle`), and goes again
    while more came meanwhile. A lone call costs what it did; a burst shares
    the round trip. A caller that stops waiting (a timeout) does not take
    its item back: it may still be sent, as a cancelled redis-py call may.
    Batched and the pub/sub layer's shards (django_realtime.layers) send
    through one."""

    def __init__(self, send: Callable[[list[tuple[Any, asyncio.Future]]], Awaitable[None]]):
        self.send = send
        self.queued: list[tuple[Any, asyncio.Future]] = []
        self.sender: asyncio.Task | None = None

    def put(self, item: Any) -> asyncio.Future:
        """Queue `item`; await the future for its outcome, once sent (raised
        if it failed). A plain future, no coroutine: this is on every call."""
        future = asyncio.get_running_loop().create_future()
        self.queued.append((item, future))
        if self.sender is None:
            self.sender = asyncio.ensure_future(self._send())
        return future

    async def put_many(self, items: list[Any]) -> list[Any]:
        """put() of each, queued at once (so sent together); the first failure raises."""
        return list(await asyncio.gather(*[self.put(item) for item in items]))

    async def _send(self) -> None:
        taken: list[tuple[Any, asyncio.Future]] = []
        try:
            while self.queued:
                taken, self.queued = self.queued, []
                await self.send(taken)
        except asyncio.CancelledError:  # the loop is ending: nobody is left waiting
            for _, future in taken + self.queued:
                future.cancel()
            self.queued = []
            raise
        finally:
            self.sender = None


def settle(future: asyncio.Future, outcome: Any) -> None:
    """An Outbox item's outcome: an exception is raised to its caller."""
    if future.done():
        return  # its caller stopped waiting
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _evalsha(script: Any, keys: Sequence[Any], args: Sequence[Any]) -> tuple[tuple, str]:
    """A Batched item: the EVALSHA command and the source to load if Redis lost it."""
    return ("EVALSHA", script.sha, len(keys), *keys, *args), script.script


class Batched:
    """One asyncio client's commands from concurrent callers, sent together.

    A redis-py call costs far more CPU alone than as one command of a
    pipeline (docs/performance.md). A call here joins the client's Outbox
    and goes out in one pipeline (one round trip) with whatever else was
    queued meanwhile. Each caller gets its own reply or error; a failed link
    fails the calls of its pipeline.
    """

    def __init__(self, client: Any):
        self.client = client
        self.outbox = Outbox(self._send_batch)

    async def call(self, *command: Any) -> Any:
        """One command's reply (parsed as redis-py parses it)."""
        return await self.outbox.put((command, None))

    async def script(self, script: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """A redis-py registered script (`sha`, `script`), run with the others."""
        return await self.outbox.put(_evalsha(script, keys, args))

    async def scripts(self, script: Any, calls: list[tuple[list[Any], list[Any]]]) -> list[Any]:
        """script() for each (keys, args), queued at once: one pipeline."""
        return await self.outbox.put_many([_evalsha(script, keys, args) for keys, args in calls])

    async def _send_batch(self, queued: list[tuple[Any, asyncio.Future]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for (command, _), _ in queued:
            pipe.execute_command(*command)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - every caller of the pipeline raises it
            replies = [exc] * len(queued)
        for ((command, source), future), reply in zip(queued, replies, strict=True):
            if isinstance(reply, NoScriptError) and source is not None:
                try:  # Redis restarted empty: load the script, then send again
                    await self.client.script_load(source)
                    reply = await self.client.execute_command(*command)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the caller raises it
                    reply = exc
            settle(future, reply)


_batched: weakref.WeakKeyDictionary[Any, Batched] = weakref.WeakKeyDictionary()


def batched(client: Any) -> Batched:
    """The client's Batched (one per client, so one outbox per connection pool)."""
    held = _batched.get(client)
    if held is None:
        held = _batched[client] = Batched(client)
    return held


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
