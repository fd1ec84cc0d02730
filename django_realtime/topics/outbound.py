"""
Provides OutboundQueue, a connection's publications waiting to go out while
it is behind (its socket full, or a namespace's max_rate used up): a newer
publication with the same key replaces a waiting one; past TOPICS_MAX_QUEUE
the connection is closed (4413). Why: docs/architecture.md, "topics.subscriptions".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from .. import metrics
from ..background import spawn
from ..conf import realtime_settings
from ..rates import Rate
from . import names
from .history import Publication
from .hub import batch_frames

# The connection's log lines keep the subscriptions' logger.
logger = logging.getLogger("django_realtime.topics.subscriptions")

# Where a publication waits in a connection's queue: by key, so a newer one
# replaces it; a keyless one has a slot of its own.
Slot = tuple[Any, ...]

# How often a connection that is behind looks at its socket again.
BEHIND_POLL_SECONDS = 0.02


class Subscribed(Protocol):
    """What the queue reads of a subscription (topics.subscriptions.Subscription)."""

    namespace: names.Namespace
    batch: bool


class TokenBucket:
    """A token bucket for a namespace's max_rate, per connection."""

    def __init__(self, rate: Rate):
        self.capacity = float(rate.count)
        self.per_second = rate.count / rate.period_seconds
        self.tokens = self.capacity
        self.at = time.monotonic()

    def wait(self) -> float:
        """0 if a publication may go now (and takes a token), else how long until one may."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.per_second)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.per_second


class OutboundQueue:
    """A mixin for Subscriptions: its queue, its namespaces' buckets and the
    task that writes the queue out."""

    user: Any
    subs: Mapping[str, Subscribed]
    send_text: Callable[..., Awaitable[None]]
    pending_output: Callable[[], int] | None
    overflow: Callable[[], Awaitable[None]]
    closed: bool

    def start_queue(self) -> None:
        """An empty queue (call once, in __init__)."""
        self.queue: OrderedDict[tuple[str, Slot], tuple[Publication, str]] = OrderedDict()
        self.buckets: dict[str, TokenBucket] = {}
        self.writer: asyncio.Task | None = None

    def _behind(self, namespace: names.Namespace) -> bool:
        """Whether a publication must wait (a token is taken when it need not)."""
        probe = self.pending_output
        if probe is not None and probe() > realtime_settings.TOPICS_BEHIND_BYTES:
            return True
        return namespace.max_rate is not None and self._bucket(namespace).wait() > 0

    def _bucket(self, namespace: names.Namespace) -> TokenBucket:
        bucket = self.buckets.get(namespace.name)
        if bucket is None:
            assert namespace.max_rate is not None
            bucket = self.buckets[namespace.name] = TokenBucket(namespace.max_rate)
        return bucket

    def _enqueue(self, sub: Subscribed, publication: Publication, text: str) -> None:
        key: tuple[str, Slot] = (
            publication.topic,
            (publication.key,) if publication.key is not None else (None, publication.offset),
        )
        if self.queue.pop(key, None) is not None:
            metrics.TOPIC_CONFLATED.inc()
        self.queue[key] = (publication, text)
        if len(self.queue) > realtime_settings.TOPICS_MAX_QUEUE:
            logger.info("closing a connection of user %s: its topic queue is full", self.user.pk)
            self.queue.clear()
            self.closed = True
            metrics.OUTPUT_OVERFLOWS.inc()
            spawn(self.overflow())
            return
        if self.writer is None:
            self.writer = asyncio.create_task(self._write())

    async def _write(self) -> None:
        """Send the queue in order as the socket and the rates allow."""
        try:
            while self.queue and not self.closed:
                probe = self.pending_output
                if probe is not None and probe() > realtime_settings.TOPICS_BEHIND_BYTES:
                    await asyncio.sleep(BEHIND_POLL_SECONDS)
                    continue
                ready = self._send_next()
                if ready is None:
                    continue
                if isinstance(ready, float):
                    await asyncio.sleep(min(ready, 1.0))
                else:
                    for text in ready:
                        await self.send_text(text)
        finally:
            self.writer = None

    def _send_next(self) -> list[str] | float | None:
        """Take the first queued publication whose namespace may send now,
        with the rest of its topic's queue if it batches: the frames to send;
        else the wait until one may (None: look again)."""
        soonest = None
        for key, (publication, text) in self.queue.items():
            sub = self.subs.get(publication.topic)
            if sub is None:
                del self.queue[key]
                return None  # dropped; look again
            rate = sub.namespace.max_rate
            wait = self._bucket(sub.namespace).wait() if rate is not None else 0.0
            if wait == 0:
                if not sub.batch:
                    del self.queue[key]
                    return [text]
                taken = [k for k in self.queue if k[0] == publication.topic]
                return batch_frames(publication.topic, [self.queue.pop(k)[0] for k in taken])
            soonest = wait if soonest is None else min(soonest, wait)
        return soonest

    def _drop_queued(self, topic: str) -> None:
        for key in [k for k in self.queue if k[0] == topic]:
            del self.queue[key]
