"""
Provides the topic hub: one layer subscription per topic per process, and
the hand-over of each publication, in offset order, to every connection of
the process that subscribed to it.

Why it is shaped so: docs/architecture.md, "topics.hub".
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from .. import bus, metrics
from ..conf import realtime_settings
from ..errors import Unavailable
from ..hubs import LoopHub
from . import names, visibility
from .history import Publication, history

logger = logging.getLogger(__name__)

CHANNEL_PREFIX = "topics"
# Members served between two yields to the event loop during one hand-over,
# so a topic with thousands of subscribers does not stall the process.
YIELD_EVERY = 200


# A `publications` frame carries at most about this much: what a round
# holds beyond it goes in the next frame (far below the 1 MiB frame limit).
BATCH_FRAME_CHARS = 256 * 1024


T = TypeVar("T")


class Member(Protocol):
    """What the hub needs of a connection (topics.subscriptions.Subscriptions)
    or an SSE stream (topics.views.TopicStream)."""

    user: Any

    async def offer_round(self, round: Round) -> None:
        """A round of a topic it subscribed to."""


class Round:
    """What the hub hands out of one topic at once: its publications in
    offset order, each with `after`, the offset the hub handed out before
    it in its epoch (None if unknown; what lies between was superseded
    here, not lost). The frames are encoded once, for every member; `users`
    are the members' users, and `shared()` what members compute once for
    all of them (an SSE frame, a gap's history read). A member's user who
    lost sight of an object gets `gone()` in its publication's place
    (topics.visibility), decided once per round for every such user."""

    def __init__(
        self,
        topic: str,
        items: list[Publication],
        before: tuple[str, int] | None,
        allowed: dict[int, set[int]],
        users: list[Any] | None = None,
    ):
        self.topic, self.items, self.allowed = topic, items, allowed
        self.users = users or []
        self.cache: dict[Hashable, Any] = {}
        self.everything: list[tuple[Publication, int | None]] = []
        for item in items:
            after = before[1] if before is not None and before[0] == item.epoch else None
            self.everything.append((item, after))
            before = (item.epoch, item.offset)
        # One epoch throughout: then each item's `after` is the one before it,
        # and whoever may take the first item straight may take them all.
        self.chained = len({item.epoch for item in items}) <= 1
        self._gone: dict[int, Publication] = {}  # by offset
        # By offset and whether it is the `gone()` one.
        self._texts: dict[tuple[int, bool], str] = {}
        # By what they carry (as _texts); None: the whole round.
        self._batches: dict[tuple[tuple[int, bool], ...] | None, list[str]] = {}

    async def visible(self, user: Any) -> list[tuple[Publication, int | None]]:
        """What `user` is sent (those with an audience are checked per
        user), each with its `after`: what they may see, and `gone()` where
        they lost sight of the object; `everything` when the round has no
        audience to check."""
        if not self.allowed:
            return self.everything
        pk = getattr(user, "pk", None)
        sent = []
        for item, after in self.everything:
            seeing = self.allowed.get(item.offset)
            if seeing is None or pk in seeing:
                sent.append((item, after))
                continue
            instead = self.gone(item)
            if instead is not None and pk in await self.lost(item):
                sent.append((instead, after))
        return sent

    async def lost(self, publication: Publication) -> set[int]:
        """The pks of the round's users who saw `publication`'s object before
        the save and may not now: one check per round for them all."""
        seeing = self.allowed.get(publication.offset)
        if seeing is None:
            return set()
        return await self.shared(
            ("lost", publication.offset),
            lambda: visibility.lost(publication, self.users, seeing),
        )

    def gone(self, publication: Publication) -> Publication | None:
        """What stands in for `publication` where its object left the user's
        sight (visibility.gone), made once per round."""
        found = self._gone.get(publication.offset)
        if found is None:
            instead = visibility.gone(publication)
            if instead is None:
                return None
            found = self._gone[publication.offset] = instead
        return found

    def _is_gone(self, publication: Publication) -> bool:
        return self._gone.get(publication.offset) is publication

    async def shared(self, key: Hashable, make: Callable[[], Awaitable[T]]) -> T:
        """`make()`'s result, awaited once for every member that asks by
        `key` while this round is held (a member cancelled meanwhile does
        not cancel it for the others)."""
        task = self.cache.get(key)
        if task is None:
            task = self.cache[key] = asyncio.ensure_future(make())
        return await asyncio.shield(task)

    def text(self, publication: Publication) -> str:
        """Its `publication` frame."""
        at = (publication.offset, self._is_gone(publication))
        text = self._texts.get(at)
        if text is None:
            text = self._texts[at] = json.dumps(publication.frame(), ensure_ascii=False)
        return text

    def batch(self, items: list[Publication] | None = None) -> list[str]:
        """`publications` frames carrying `items` (usually one frame); all
        of the round's by default."""
        key = None if items is None else tuple((i.offset, self._is_gone(i)) for i in items)
        texts = self._batches.get(key)
        if texts is None:
            carried = self.items if items is None else items
            texts = self._batches[key] = batch_frames(self.topic, carried)
        return texts


def batch_frames(topic: str, items: list[Publication]) -> list[str]:
    """`{"type": "publications", "topic", "publications": [...]}` frames
    carrying `items` in order, each a `publication` frame's offset, key and
    data, split to stay under about BATCH_FRAME_CHARS."""
    head = '{"type":"publications","topic":' + json.dumps(topic) + ',"publications":['
    frames: list[str] = []
    parts: list[str] = []
    size = 0
    for item in items:
        entry: dict[str, Any] = {"offset": item.offset}
        if item.key is not None:
            entry["key"] = item.key
        entry["data"] = item.data
        part = json.dumps(entry, ensure_ascii=False, separators=(",", ":"))
        if parts and size + len(part) > BATCH_FRAME_CHARS:
            frames.append(head + ",".join(parts) + "]}")
            parts, size = [], 0
        parts.append(part)
        size += len(part) + 1
    if parts:
        frames.append(head + ",".join(parts) + "]}")
    return frames


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


class TopicHub(LoopHub):
    CHANNEL_PREFIX = CHANNEL_PREFIX

    def __init__(self) -> None:
        super().__init__()
        self.topics: dict[str, _Topic] = {}
        self.ready = asyncio.Event()  # something is waiting to be handed out
        # Seconds from one round's start to the next's: TOPICS_ROUND_SECONDS,
        # or longer while hand-outs take more than their share of the process.
        self.cycle = realtime_settings.TOPICS_ROUND_SECONDS

    # --- membership ----------------------------------------------------------------
    async def add(self, topic: str, member: Member) -> None:
        held = self.topics.get(topic)
        if held is None:
            held = self.topics[topic] = _Topic()
        held.members.add(member)
        await self.start()
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
    def loops(self) -> dict[str, Any]:
        return {**super().loops(), "hand-out": self._hand_loop}

    def parse(self, event: bus.Event) -> Publication | None:
        if event.get("type") != "topic.publication":
            return None
        return Publication.from_event(event)

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

    handle = receive  # what the receive loop hands each doorbell's publication to

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

    def _behind(self, held: _Topic, now: float) -> bool:
        if len(held.waiting) >= realtime_settings.TOPICS_PROCESS_BACKLOG:
            return True
        _, came = next(iter(held.waiting.values()))
        # Waiting for the next round is not being behind.
        lag = realtime_settings.TOPICS_PROCESS_LAG_SECONDS + self.cycle
        return now - came > lag

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
        loop = asyncio.get_running_loop()
        while True:
            await self.ready.wait()
            self.ready.clear()
            while True:
                started = loop.time()
                rounds = [
                    (topic, self._take(held))
                    for topic, held in list(self.topics.items())
                    if held.waiting
                ]
                if not rounds:
                    break
                for topic, items in rounds:
                    try:
                        await self.hand_out(topic, items)
                    except Exception:  # noqa: BLE001 - the next round still goes out
                        logger.exception("handing out publications of %s failed", topic)
                pause = self._pause(loop.time() - started)
                if pause > 0:
                    await asyncio.sleep(pause)
            self.cycle = realtime_settings.TOPICS_ROUND_SECONDS

    def _pause(self, took: float) -> float:
        """How long to wait after a round that took `took` seconds to hand
        out: the next round starts no sooner than TOPICS_ROUND_SECONDS after
        this one began, and hand-outs take at most TOPICS_HAND_OUT_SHARE of
        the process's time. A process that cannot keep up sends fewer,
        fuller rounds (a batching subscriber's frame carries more) instead of
        spending all its time on them and falling further behind."""
        share = min(1.0, max(0.05, realtime_settings.TOPICS_HAND_OUT_SHARE))
        pause = max(realtime_settings.TOPICS_ROUND_SECONDS - took, took * (1 - share) / share)
        self.cycle = max(realtime_settings.TOPICS_ROUND_SECONDS, took + pause)
        return pause

    @staticmethod
    def _take(held: _Topic) -> list[Publication]:
        """Everything waiting, in offset order."""
        items = [publication for publication, _ in held.waiting.values()]
        held.waiting.clear()
        held.keyed.clear()
        return items

    async def hand_out(self, topic: str, items: list[Publication]) -> None:
        held = self.topics.get(topic)
        if held is None or not items:
            return
        members = list(held.members)
        users = [m.user for m in members]
        allowed: dict[int, set[int]] = {}
        for item in items:
            if item.audience is not None:
                allowed[item.offset] = await visibility.allowed(item, users)
        handed = Round(topic, items, held.handed, allowed, users)
        held.handed = (items[-1].epoch, items[-1].offset)
        for index, member in enumerate(members, 1):
            try:
                await member.offer_round(handed)
            except Exception as exc:  # noqa: BLE001 - one connection's failure is not the others'
                logger.debug("topic delivery to a connection failed: %r", exc)
            if index % YIELD_EVERY == 0:
                await asyncio.sleep(0)

    # --- refreshing -------------------------------------------------------------------
    async def refresh(self, *, everything: bool) -> bool:
        """Re-add the topics' groups (every one, or those whose add failed),
        each then caught up from the history."""
        current = bus.epoch()
        stale = [t for t, held in self.topics.items() if everything or held.added != current]
        for topic in stale:
            if await self.inbox.join(bus.topic_group(topic)) and topic in self.topics:
                self.topics[topic].added = current
                await self.catch_up(topic)
        return True

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


def hub() -> TopicHub:
    """The running event loop's topic hub (one per server process)."""
    return TopicHub.for_loop()
