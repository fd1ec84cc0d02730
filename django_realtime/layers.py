"""
Provides the Redis channel layers, made to survive Redis dying, hanging or
restarting empty: ResilientRedisPubSubChannelLayer (the default) and
ResilientRedisChannelLayer (channels_redis' core layer).

The pub/sub layer subscribes each process once per group and fans out to its
local consumers, so a message costs one PUBLISH however many members a room
has; it keeps no messages in Redis, so it loses those published while Redis
is away, which is why every consumer catches up from the database whenever
`epoch` moves.

Stock, a Redis outage makes every consumer's `receive()` raise, the consumer
dies and its client gets 1011. Here `receive()` waits out the outage instead
(backing off, probing Redis with a bounded PING) and bumps `epoch` when Redis
answers again. Consumers watch `epoch` to re-add their group memberships (a
restarted Redis has none) and to catch up from the database on what was
broadcast while the layer was down. Sends stay best-effort: the database is
the record, the layer only rings the doorbell.
"""

import asyncio
import logging

from channels_redis.core import RedisChannelLayer
from channels_redis.pubsub import (
    RedisPubSubChannelLayer,
    RedisPubSubLoopLayer,
    RedisSingleShardConnection,
)

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
                await asyncio.wait_for(self.connection(0).ping(), PROBE_TIMEOUT_SECONDS)
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
            shard = self._get_layer()._shards[0]
            try:
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


class _WatchedShard(RedisSingleShardConnection):
    """A shard whose receive loop reports failures and recoveries to the layer.
    redis-py re-subscribes by itself when it reconnects; what was published in
    between is lost, and the epoch tells consumers to catch up."""

    def __init__(self, host, loop_layer, watcher: ResilientRedisPubSubChannelLayer):
        super().__init__(host, loop_layer)
        self.watcher = watcher

    async def _do_receiving(self):
        failed = False
        while True:
            try:
                if self._pubsub and self._pubsub.subscribed:
                    message = await self._pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=0.1
                    )
                    if failed:  # reconnected (and re-subscribed) after a failure
                        failed = False
                        self.watcher.healthy = False
                        self.watcher.note_recovered()
                    self._receive_message(message)
                else:
                    await asyncio.sleep(0.1)
            except (asyncio.CancelledError, GeneratorExit):
                raise
            except BaseException as exc:  # noqa: BLE001 - redis-py raises many kinds
                if not failed:
                    logger.warning("channel layer receive failed, waiting for Redis: %r", exc)
                failed = True
                self.watcher.healthy = False
                await asyncio.sleep(0.5)
