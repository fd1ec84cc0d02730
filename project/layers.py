"""
Provides ResilientRedisChannelLayer: channels_redis' core layer, made to
survive Redis dying, hanging or restarting empty.

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
