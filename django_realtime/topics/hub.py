"""
Provides the topic hub: one layer subscription per topic per process, and
the hand-over of each publication, in offset order, to every connection of
the process that subscribed to it.

The layer is a doorbell carrying the publication. The hub puts a topic's
doorbells back in offset order (publishers on several processes race) and
fills a gap from the history. Doorbells wait in a per-topic queue where a
newer publication with the same key replaces a waiting one: when the
process itself falls behind (more publications than it can hand out: the
oldest waiting one came more than TOPICS_PROCESS_LAG_SECONDS ago), it
hands out the latest value of each key rather than falling further behind.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Protocol

from .. import bus, metrics
from ..conf import realtime_settings
from ..errors import Unavailable
from . import names, visibility
from .history import Publication, history

logger = logging.getLogger(__name__)

CHANNEL_PREFIX = "topics"
# Members served between two yields to the event loop during one hand-over,
# so a topic with thousands of subscribers does not stall the process.
YIELD_EVERY = 200


class Member(Protocol):
    """What the hub needs of a connection (topics.subscriptions.Subscriptions)."""

    user: Any

    async def offer(self, publication: Publication, text: str, after: int | None) -> None:
        """`after`: the offset the hub handed out before this one in its
        epoch (None if unknown); what lies between was superseded here."""


@dataclass
class _Topic:
    members: set[Member] = field(default_factory=set)
    epoch: str | None = None
    delivered: int = 0  # the highest offset handed out in `epoch`
    # By offset: each publication waiting to be handed out, and when it came.
    waiting: OrderedDict[int, tuple[Publication, float]] = field(default_factory=OrderedDict)
    # Each key's latest waiting publication, by its offset.
    keyed: dict[str, int] = field(default_factory=dict)
    added: int | None = None  # the layer epoch its group was added in
    # The offset last handed out, and in which epoch: a member learns from
    # it that the offsets it skipped were conflated here, not lost.
    handed: tuple[str, int] | None = None


class TopicHub:
    def __init__(self) -> None:
        self.topics: dict[str, _Topic] = {}
        self.inbox = bus.Inbox(prefix=CHANNEL_PREFIX)
        self.ready = asyncio.Event()  # something is waiting to be handed out
        self.tasks: list[asyncio.Task] = []
        self.starting = asyncio.Lock()

    # --- membership ----------------------------------------------------------------
    async def add(self, topic: str, member: Member) -> None:
        held = self.topics.get(topic)
        if held is None:
            held = self.topics[topic] = _Topic()
        held.members.add(member)
        await self._start()
        if held.added != bus.epoch():
            if await self.inbox.join(bus.topic_group(topic)):
                held.added = bus.epoch()

    async def remove(self, topic: str, member: Member) -> None:
        held = self.topics.get(topic)
        if held is None:
            return
        held.members.discard(member)
        if not held.members:
            del self.topics[topic]
            await self.inbox.leave(bus.topic_group(topic))

    # --- receiving -------------------------------------------------------------------
    async def _start(self) -> None:
        async with self.starting:
            if not self.inbox.channel:
                self.inbox.channel = await bus.new_channel(CHANNEL_PREFIX)
            if not self.tasks or any(task.done() for task in self.tasks):
                for task in self.tasks:
                    task.cancel()
                self.tasks = [
                    asyncio.create_task(self._receive_loop(), name="topic-receive"),
                    asyncio.create_task(self._hand_loop(), name="topic-hand-out"),
                    asyncio.create_task(self._refresh_loop(), name="topic-refresh"),
                ]

    async def _receive_loop(self) -> None:
        while True:
            event = await self.inbox.next()
            if event is None or event.get("type") != "topic.publication":
                continue
            try:
                await self.receive(Publication.from_event(event))
            except Exception:  # noqa: BLE001 - one bad doorbell must not end the hub
                logger.exception("topic doorbell failed")

    async def receive(self, publication: Publication) -> None:
        """Queue a doorbell's publication in offset order (after the gap it
        may be ahead of)."""
        held = self.topics.get(publication.topic)
        if held is None:
            return
        if held.epoch != publication.epoch:
            # The first doorbell, or a new epoch: members compare epochs themselves.
            held.epoch, held.delivered = publication.epoch, publication.offset - 1
        if publication.offset <= held.delivered:
            return
        queued = []
        if publication.offset > held.delivered + 1:
            queued = await self._gap(publication.topic, held, publication.offset)
        for item in [*queued, publication]:
            if item.offset > held.delivered:
                self._queue(held, item)
                held.delivered = item.offset
        self.ready.set()

    def _queue(self, held: _Topic, item: Publication) -> None:
        """Wait to be handed out. While the process keeps up every
        publication waits its turn. Once it is behind (the oldest waiting
        came more than TOPICS_PROCESS_LAG_SECONDS ago, or
        TOPICS_PROCESS_BACKLOG wait), one with a key replaces the waiting one
        with that key: its subscribers get the latest value of each key, and
        what waits is bounded by the keys, so is how far behind they are."""
        now = asyncio.get_running_loop().time()
        if item.key is not None and held.waiting and self._behind(held, now):
            previous = held.keyed.get(item.key)
            if previous is not None and held.waiting.pop(previous, None) is not None:
                metrics.TOPIC_CONFLATED.inc()
        held.waiting[item.offset] = (item, now)
        if item.key is not None:
            held.keyed[item.key] = item.offset

    @staticmethod
    def _behind(held: _Topic, now: float) -> bool:
        if len(held.waiting) >= realtime_settings.TOPICS_PROCESS_BACKLOG:
            return True
        _, came = next(iter(held.waiting.values()))
        return now - came > realtime_settings.TOPICS_PROCESS_LAG_SECONDS

    async def _gap(self, topic: str, held: _Topic, offset: int) -> list[Publication]:
        """The publications of the current epoch between what was handed out
        and `offset`, from the history (what it still holds of them)."""
        try:
            state = await history().state(topic, namespace=names.parse(topic))
        except Unavailable:
            return []
        if state.epoch != held.epoch:
            return []
        return [p for p in state.publications if held.delivered < p.offset < offset]

    # --- handing out -------------------------------------------------------------------
    async def _hand_loop(self) -> None:
        while True:
            await self.ready.wait()
            self.ready.clear()
            while True:
                batch = [
                    (topic, self._next(held))
                    for topic, held in list(self.topics.items())
                    if held.waiting
                ]
                if not batch:
                    break
                for topic, publication in batch:
                    try:
                        await self.hand_out(topic, publication)
                    except Exception:  # noqa: BLE001 - the next publication still goes out
                        logger.exception("handing out a publication of %s failed", topic)

    @staticmethod
    def _next(held: _Topic) -> Publication:
        offset, (publication, _) = held.waiting.popitem(last=False)
        if publication.key is not None and held.keyed.get(publication.key) == offset:
            del held.keyed[publication.key]
        return publication

    async def hand_out(self, topic: str, publication: Publication) -> None:
        held = self.topics.get(topic)
        if held is None:
            return
        members = list(held.members)
        if publication.audience is not None:
            allowed = await visibility.allowed(publication, [m.user for m in members])
            members = [m for m in members if m.user.pk in allowed]
        text = json.dumps(publication.frame(), ensure_ascii=False)
        before = held.handed
        after = before[1] if before is not None and before[0] == publication.epoch else None
        held.handed = (publication.epoch, publication.offset)
        for index, member in enumerate(members, 1):
            try:
                await member.offer(publication, text, after)
            except Exception as exc:  # noqa: BLE001 - one connection's failure is not the others'
                logger.debug("topic delivery to a connection failed: %r", exc)
            if index % YIELD_EVERY == 0:
                await asyncio.sleep(0)

    # --- refreshing -------------------------------------------------------------------
    async def _refresh_loop(self) -> None:
        """Re-add the topics' groups every GROUP_REFRESH_SECONDS (jittered)
        and at once when the layer's epoch moves (Redis answers again)."""
        loop = asyncio.get_running_loop()
        due = loop.time() + realtime_settings.GROUP_REFRESH_SECONDS * random.uniform(0.5, 1.0)
        while True:
            await asyncio.sleep(min(1.0, realtime_settings.GROUP_REFRESH_SECONDS))
            current = bus.epoch()
            stale = [t for t, held in self.topics.items() if held.added != current]
            if loop.time() >= due:
                stale = list(self.topics)
                due = loop.time() + realtime_settings.GROUP_REFRESH_SECONDS * random.uniform(
                    0.5, 1.0
                )
            for topic in stale:
                if await self.inbox.join(bus.topic_group(topic)) and topic in self.topics:
                    self.topics[topic].added = current
                    await self.catch_up(topic)

    async def catch_up(self, topic: str) -> None:
        """Whatever the layer did not ring, from the history: its latest
        publication goes through receive(), which fills the gap before it
        (or starts the new epoch, which members then resync to)."""
        try:
            state = await history().state(topic, namespace=names.parse(topic))
        except Unavailable:
            return
        if state.publications:
            await self.receive(state.publications[-1])


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TopicHub] = weakref.WeakKeyDictionary()


def hub() -> TopicHub:
    """The running event loop's topic hub (one per server process)."""
    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None:
        found = _hubs[loop] = TopicHub()
    return found
