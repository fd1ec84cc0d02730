"""
Provides the Redis channel layers that survive Redis dying, hanging or
restarting empty: ResilientRedisPubSubChannelLayer (the default) and
ResilientRedisChannelLayer. `receive()` waits out an outage instead of
raising (stock: the consumer dies with 1011), and `epoch` moves when Redis
answers again so consumers re-add their groups and catch up from the
database. Why: docs/architecture.md, "layers".
"""

import asyncio
import logging
import socket
import uuid
from typing import Any

from channels_redis.core import RedisChannelLayer
from channels_redis.pubsub import (
    RedisPubSubChannelLayer,
    RedisPubSubLoopLayer,
    RedisSingleShardConnection,
)

from .batching import Outbox, settle
from .namespace import DEFAULT_PREFIX, channel_prefix

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_SECONDS = 2.0
# Retry quickly at first (a restart takes about a second), then at most every
# 2 s, so a thousand waiting consumers cost Redis little when it comes back.
BACKOFF_START_SECONDS = 0.1
BACKOFF_MAX_SECONDS = 2.0


class ResilientRedisChannelLayer(RedisChannelLayer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.epoch = 0  # bumped each time Redis answers again after a failure
        self.healthy = True
        self._probe_lock: asyncio.Lock | None = None

    async def receive(self, channel):
        """Receive one message, waiting out Redis outages instead of raising."""
        delay = BACKOFF_START_SECONDS
        while True:
            try:
                return await super().receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - redis-py raises many kinds
                if self.healthy:
                    logger.warning("channel layer receive failed, waiting for Redis: %r", exc)
                self.healthy = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_SECONDS)
            await self._probe()

    async def _probe(self) -> None:
        """PING Redis; on the first success after a failure, bump the epoch."""
        if self._probe_lock is None:
            self._probe_lock = asyncio.Lock()
        async with self._probe_lock:
            if self.healthy:
                return
            try:
                # Every shard: a receive fails on the shard of its channel, and
                # memberships are lost on the shard of their group.
                for index in range(self.ring_size):
                    await asyncio.wait_for(self.connection(index).ping(), PROBE_TIMEOUT_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001
                return
            self.healthy = True
            self.epoch += 1
            logger.warning("channel layer: Redis answers again (epoch %d)", self.epoch)

    def note_failure(self) -> None:
        """A send or group call failed: probe before trusting memberships again."""
        self.healthy = False


class ResilientRedisPubSubChannelLayer(RedisPubSubChannelLayer):
    """channels_redis' pub/sub layer with an `epoch` that moves when Redis
    answers again after a failure, seen by the receiver or by a send."""

    def __init__(self, *args, **kwargs):
        # Redis pub/sub ignores database numbers: the channels carry them, so
        # sites on /1 and /2 of one server never meet (django_realtime.namespace).
        hosts = args[0] if args else kwargs.get("hosts")
        prefix = args[1] if len(args) > 1 else kwargs.pop("prefix", DEFAULT_PREFIX)
        args = args[:1]
        kwargs["prefix"] = channel_prefix(prefix, hosts)
        super().__init__(*args, **kwargs)
        self.epoch = 0
        self.healthy = True
        self._prober: asyncio.Task | None = None

    def _get_layer(self) -> RedisPubSubLoopLayer:
        loop = asyncio.get_running_loop()
        fresh = loop not in self._layers
        layer = super()._get_layer()
        if fresh:
            layer._shards = [_WatchedShard(shard.host, layer, self) for shard in layer._shards]
        return layer

    async def new_channel(self, prefix: str = "specific.") -> str:
        """A new channel of this process, on a shard that answers: a consumer
        opening while one of several shards is down gets its channel on
        another (stock, the handshake fails with 500 for the channels whose
        random name hashes to the dead shard). With one host, one attempt."""
        layer = self._get_layer()
        attempts = 1 if len(layer._shards) == 1 else 3 * len(layer._shards)
        for attempt in range(attempts):
            channel = f"{layer.prefix}{prefix}{uuid.uuid4().hex}"
            try:
                # Upstream's own step: the channel's queue, then its shard's SUBSCRIBE.
                await layer._subscribe_to_channel(channel)
                return channel
            except asyncio.CancelledError:
                layer.channels.pop(channel, None)
                raise
            except Exception:  # noqa: BLE001 - redis-py raises many kinds
                layer.channels.pop(channel, None)
                if attempt + 1 == attempts:
                    raise
                self.note_failure()
        raise AssertionError("unreachable")

    def note_failure(self) -> None:
        """A send or group call failed: probe Redis until it answers, then bump the epoch."""
        self.healthy = False
        if self._prober is None or self._prober.done():
            self._prober = asyncio.ensure_future(self._probe_until_healthy())

    def note_recovered(self) -> None:
        if not self.healthy:
            self.healthy = True
            self.epoch += 1
            logger.warning("channel layer: Redis answers again (epoch %d)", self.epoch)

    async def _probe_until_healthy(self) -> None:
        """PING until Redis answers. Only a recovery from a PING that failed moves
        the epoch: a send that timed out because this process was busy, with
        Redis answering at once, is no outage, and a catch-up storm in every
        consumer would only make the process busier."""
        delay = BACKOFF_START_SECONDS
        outage = False
        while not self.healthy:
            try:
                # Every shard (several hosts): the failure may be any one's.
                for shard in self._get_layer()._shards:
                    shard._ensure_redis()
                    await asyncio.wait_for(shard._redis.ping(), PROBE_TIMEOUT_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001
                outage = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_SECONDS)
                continue
            if outage:
                self.note_recovered()
            else:
                self.healthy = True


# A subscriber only reads, so when its link to Redis goes silent (a network
# partition: no reset) nothing it does fails; redis-py's health check PINGs
# without awaiting the answer, and that unacknowledged PING keeps the kernel
# retransmitting for some 15 minutes before it gives up, the process deaf to
# every group meanwhile (tests/hosts found it). The kernel ends such a link
# after DEAD_LINK_SECONDS instead: TCP_USER_TIMEOUT for data sent and not
# acknowledged, keepalive probes for a quiet link. redis-py then reconnects
# and subscribes again, and the epoch moves. A busy or frozen Redis still
# acknowledges at the TCP level, so neither ends a healthy link.
DEAD_LINK_SECONDS = 10
RECEIVE_POLL_SECONDS = 0.1
_DEAD_LINK_OPTIONS = {
    name: value
    for name, value in (
        ("TCP_KEEPIDLE", 4),
        ("TCP_KEEPINTVL", 2),
        ("TCP_KEEPCNT", 3),
        ("TCP_USER_TIMEOUT", DEAD_LINK_SECONDS * 1000),
    )
    if hasattr(socket, name)  # Linux has them all
}


def _dead_link_bounded(host: dict) -> dict:
    """The shard's connection options, with the dead-link bound unless the
    site set its own keepalive options."""
    options = {getattr(socket, name): value for name, value in _DEAD_LINK_OPTIONS.items()}
    return {"socket_keepalive": True, "socket_keepalive_options": options, **host}


def _checkout(pool: Any) -> Any:
    """A connection of `pool` to keep (redis-py 5.3+ takes no command name;
    5.2 requires one)."""
    try:
        return pool.get_connection()
    except TypeError:
        return pool.get_connection("PUBLISH")


class _WatchedShard(RedisSingleShardConnection):
    """A shard whose receive loop reports failures and recoveries to the layer,
    and whose publishes and (un)subscribes go out together.

    redis-py re-subscribes by itself when it reconnects; what was published in
    between is lost, and the epoch tells consumers to catch up.

    Upstream sends each PUBLISH, SUBSCRIBE and UNSUBSCRIBE on its own, one at a
    time under the shard's lock, and every other caller of the process waits
    its turn for a whole round trip. Here a call joins the shard's outbox and waits;
    one sender task takes everything queued by then and sends it with one
    round trip per run of like operations (the publishes written together, the
    subscribes in one SUBSCRIBE), in the order they were called. Alone, a
    call costs what it did; under load the runs grow (a join storm's presence
    diffs, a busy process's messages) and a publish costs a fraction of one
    sent alone (docs/performance.md).
    """

    def __init__(self, host, loop_layer, watcher: ResilientRedisPubSubChannelLayer):
        super().__init__(_dead_link_bounded(host), loop_layer)
        self.watcher = watcher
        self._outbox = Outbox(self._send_queued)
        # The connection the shard's publishes go out on, and its pool's
        # (a reset shard has a new pool: then a new connection).
        self._publisher: Any = None
        self._publisher_pool: Any = None

    async def publish(self, channel, message):
        await self._outbox.put((_PUBLISH, channel, message))

    async def subscribe(self, channel):
        await self._outbox.put((_SUBSCRIBE, channel, None))

    async def unsubscribe(self, channel):
        await self._outbox.put((_UNSUBSCRIBE, channel, None))

    async def _send_queued(self, queued: list[tuple[tuple, asyncio.Future]]) -> None:
        async with self._lock:
            for run in _runs(queued):
                await self._send_run(run)

    async def _send_run(self, run: list[tuple[tuple, asyncio.Future]]) -> None:
        """One round trip for a run of like operations; each waiter learns
        its outcome (all share it: one command, or one pipeline), raised as
        upstream's call would raise it."""
        op = run[0][0][0]
        outcome: BaseException | None = None
        try:
            self._ensure_redis()
            if op == _PUBLISH:
                await self._publish(run)
            else:
                self._ensure_receiver()
                subscribing = op == _SUBSCRIBE
                # As upstream: subscribe what is not subscribed yet, and the reverse.
                channels = list(
                    dict.fromkeys(
                        channel
                        for (_, channel, _), _ in run
                        if (channel in self._subscribed_to) != subscribing
                    )
                )
                if channels:
                    if subscribing:
                        await self._pubsub.subscribe(*channels)
                        self._subscribed_to.update(channels)
                    else:
                        await self._pubsub.unsubscribe(*channels)
                        self._subscribed_to.difference_update(channels)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - each waiter raises it
            outcome = exc
        for _, future in run:
            settle(future, outcome)

    async def _publish(self, run: list[tuple[tuple, asyncio.Future]]) -> None:
        """The run's PUBLISHes written at once on the shard's own connection
        and their replies read in turn: one round trip, without the pipeline
        object, the pool's checkout and the retry wrapper redis-py spends on
        every call (a post's doorbell is one). Any failure ends the
        connection; the next run opens another."""
        pool = self._redis.connection_pool
        conn = self._publisher if self._publisher_pool is pool else None
        if conn is None:
            conn = await _checkout(pool)
            self._publisher, self._publisher_pool = conn, pool
        try:
            await conn.send_packed_command(
                conn.pack_commands(
                    [("PUBLISH", channel, message) for (_, channel, message), _ in run]
                )
            )
            for _ in run:
                await conn.read_response()
        except BaseException:
            self._publisher = None
            await conn.disconnect()
            await pool.release(conn)
            raise

    async def _do_receiving(self):
        failed = False
        # redis-py answers "nothing yet" at once, without waiting, when the
        # link ended with ETIMEDOUT (the kernel's dead-link bound: a
        # TimeoutError, taken for the poll's own timeout), and again on every
        # call: this loop would spin and starve the event loop, every
        # connection of the process with it (tests/hosts found it). Answers
        # that did not wait, several in a row, end the link; the next call
        # connects and subscribes again.
        instant = 0
        loop = asyncio.get_running_loop()
        while True:
            try:
                if self._pubsub and self._pubsub.subscribed:
                    started = loop.time()
                    message = await self._pubsub.get_message(timeout=RECEIVE_POLL_SECONDS)
                    if message is None and loop.time() - started < RECEIVE_POLL_SECONDS / 2:
                        instant += 1  # a health-check reply also answers None at once
                        if instant >= 3:
                            instant = 0
                            if self._pubsub.connection is not None:
                                await self._pubsub.connection.disconnect()
                            raise ConnectionError("the link to Redis ended")
                        continue
                    instant = 0
                    if failed:  # reconnected (and re-subscribed) after a failure
                        failed = False
                        self.watcher.healthy = False
                        self.watcher.note_recovered()
                    if message is not None and message["type"] == "message":
                        self._receive_message(message)
                else:
                    await asyncio.sleep(0.1)
            except Exception as exc:  # noqa: BLE001 - redis-py raises many kinds; cancels pass
                if not failed:
                    logger.warning("channel layer receive failed, waiting for Redis: %r", exc)
                failed = True
                self.watcher.healthy = False
                await asyncio.sleep(0.5)


_PUBLISH, _SUBSCRIBE, _UNSUBSCRIBE = "publish", "subscribe", "unsubscribe"


def _runs(queued: list) -> list[list]:
    """The queued operations, in order, cut where the kind changes."""
    runs: list[list] = []
    for item in queued:
        if runs and runs[-1][0][0][0] == item[0][0]:
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs
