"""
Provides `Subscriptions`: one WebSocket connection's topics and what it has
been sent of each (the subscribe and its replay, resyncs, gap fills, the
hub's publications in offset order); what waits while it is behind is
topics.outbound's. How: docs/architecture.md, "topics.subscriptions".
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..asyncdb import db
from ..background import spawn
from ..conf import realtime_settings
from ..errors import BadRequest
from . import names, visibility
from .history import Publication, history, replay
from .hub import Round, batch_frames, hub
from .outbound import OutboundQueue

logger = logging.getLogger(__name__)

MAX_OFFSET = 2**63 - 1
MAX_EPOCH_CHARS = 64


@dataclass
class Subscription:
    topic: str
    namespace: names.Namespace
    epoch: str = ""
    delivered: int = 0
    # While a subscribe, a resync or a gap fill is under way: what arrived
    # meanwhile (publication, its frame, the hub's `after`).
    waiting: list[tuple[Publication, str, int | None]] | None = field(default_factory=list)
    resyncing: bool = False
    batch: bool = False  # `publications` frames


class Subscriptions(OutboundQueue):
    """The topics of one connection; its queue is OutboundQueue's (topics.outbound)."""

    def __init__(
        self,
        *,
        user: Any,
        send_text: Callable[..., Awaitable[None]],  # (text, *, replay=False)
        send_frame: Callable[[dict[str, Any]], Awaitable[None]],
        pending_output: Callable[[], int] | None,
        overflow: Callable[[], Awaitable[None]],
    ):
        self.user = user
        self.send_text = send_text
        self.send_frame = send_frame
        self.pending_output = pending_output
        self.overflow = overflow
        self.subs: dict[str, Subscription] = {}
        self.closed = False
        self.start_queue()

    # --- the client's frames -------------------------------------------------------
    async def subscribe(self, frame: dict[str, Any], ref: Any) -> None:
        topic = frame.get("topic")
        namespace = names.parse(topic)
        assert isinstance(topic, str)
        since = frame.get("since")
        if since is not None and (
            isinstance(since, bool) or not isinstance(since, int) or not 0 <= since <= MAX_OFFSET
        ):
            raise BadRequest("'since' must be a non-negative integer offset")
        epoch = frame.get("epoch")
        if epoch is not None and (not isinstance(epoch, str) or len(epoch) > MAX_EPOCH_CHARS):
            raise BadRequest("'epoch' must be the string a `subscribed` frame gave")
        batch = frame.get("batch", False)
        if not isinstance(batch, bool):
            raise BadRequest("'batch' must be true or false")
        if not await _may_subscribe(namespace, self.user, topic):
            raise names.unknown(topic)
        cap = realtime_settings.TOPICS_MAX_SUBSCRIPTIONS
        if topic not in self.subs and len(self.subs) >= cap:
            raise BadRequest(f"at most {cap} topics on one connection; unsubscribe from one first")
        self._drop_queued(topic)
        sub = Subscription(topic=topic, namespace=namespace, batch=batch)
        self.subs[topic] = sub
        try:
            await hub().add(topic, self)
            await self._send_state(sub, since=since, epoch=epoch, ref=ref)
        except BaseException:
            if self.subs.get(topic) is sub:
                del self.subs[topic]
                await hub().remove(topic, self)
            raise

    async def unsubscribe(self, frame: dict[str, Any], ref: Any) -> None:
        topic = frame.get("topic")
        names.check_name(topic)
        assert isinstance(topic, str)
        if self.subs.pop(topic, None) is not None:
            self._drop_queued(topic)
            await hub().remove(topic, self)
        reply = {"type": "unsubscribed", "topic": topic}
        await self.send_frame(reply if ref is None else {**reply, "ref": ref})

    async def close(self) -> None:
        """The connection ended: leave every topic."""
        self.closed = True
        if self.writer is not None:
            self.writer.cancel()
        for topic in list(self.subs):
            del self.subs[topic]
            await hub().remove(topic, self)
        self.queue.clear()

    # --- state and replay ------------------------------------------------------------
    async def _send_state(
        self, sub: Subscription, *, since: int | None, epoch: str | None, ref: Any
    ) -> None:
        """`subscribed` and the replay, then what arrived meanwhile."""
        state = await history().state(sub.topic, namespace=sub.namespace)
        result = replay(state, since=since, epoch=epoch)
        publications = await visibility.visible(result.publications, self.user)
        if self.subs.get(sub.topic) is not sub:
            return  # unsubscribed meanwhile
        sub.epoch, sub.delivered = result.epoch, result.offset
        self._drop_queued(sub.topic)  # a resync's: of the old epoch
        subscribed = {
            "type": "subscribed",
            "topic": sub.topic,
            "offset": result.offset,
            "epoch": result.epoch,
            "recovered": result.recovered,
        }
        await self.send_frame(subscribed if ref is None else {**subscribed, "ref": ref})
        if sub.batch:
            texts = batch_frames(sub.topic, publications)
        else:
            texts = [json.dumps(p.frame(), ensure_ascii=False) for p in publications]
        for text in texts:
            await self.send_text(text, replay=True)
        await self._release(sub)

    async def _resync(self, sub: Subscription) -> None:
        """The topic's epoch changed under the subscription (its history was
        lost): a new `subscribed`, not recovered, with the latest values."""
        try:
            await self._send_state(sub, since=sub.delivered, epoch=None, ref=None)
        except Exception:  # noqa: BLE001 - the next publication tries again
            logger.warning("topic %s: resync failed; retrying at the next publication", sub.topic)
            sub.waiting = None
        finally:
            sub.resyncing = False

    async def _fill(self, sub: Subscription, publication: Publication, text: str) -> None:
        """A publication ahead of a gap for this connection that the hub did
        not conflate away (rare): the gap from the history first."""
        try:
            state = await history().state(sub.topic, namespace=sub.namespace)
            missed = [
                p
                for p in state.publications
                if state.epoch == sub.epoch and sub.delivered < p.offset < publication.offset
            ]
            for item in await visibility.visible(missed, self.user):
                self._enqueue(sub, item, json.dumps(item.frame(), ensure_ascii=False))
        except Exception:  # noqa: BLE001 - what the history cannot give, it cannot give
            logger.warning("topic %s: a gap could not be filled", sub.topic)
        sub.delivered = publication.offset
        self._enqueue(sub, publication, text)
        await self._release(sub)

    async def _release(self, sub: Subscription) -> None:
        """What waited during a subscribe, resync or fill, in order. Should
        one of them start another fill, the rest waits for that one: two at
        once would send a gap twice, or out of order."""
        waiting, sub.waiting = sub.waiting or [], None
        for index, (publication, text, after) in enumerate(waiting):
            if sub.waiting is not None:
                sub.waiting.extend(waiting[index:])
                return
            await self._accept(sub, publication, text, after)

    # --- live publications (from the hub) ----------------------------------------------
    async def offer_round(self, round: Round) -> None:
        """A round of the hub's: to a batching subscription that keeps up,
        its `publications` frame (the one encoded for everyone); otherwise
        publication by publication. Where the user lost sight of an object,
        its `deleted` stands in, at the same offset (Round.visible)."""
        sub = self.subs.get(round.topic)
        if sub is None or self.closed:
            return
        items = await round.visible(self.user)
        if not items:
            return
        every = items is round.everything
        if sub.batch and self._straight_out(sub, items[:1] if every and round.chained else items):
            sub.delivered = items[-1][0].offset
            for text in round.batch(None if every else [item for item, _ in items]):
                await self.send_text(text)
            return
        for publication, after in items:
            await self.offer(publication, round.text(publication), after)

    def _straight_out(self, sub: Subscription, items: list[tuple[Publication, int | None]]) -> bool:
        """Whether a round can go to `sub` as it is, at once: nothing waits
        before it, it follows what was sent (no gap, nothing sent twice),
        every publication of it is in the subscription's epoch, in order,
        and the socket and the namespace's rate allow a frame now. (Of a
        whole round in one epoch, the first item answers for all: each
        follows the one before it.)"""
        if sub.waiting is not None or self.queue or self.writer is not None:
            return False
        delivered = sub.delivered
        for publication, after in items:
            if publication.epoch != sub.epoch or publication.offset <= delivered:
                return False
            if publication.offset != delivered + 1 and (after is None or after > delivered):
                return False  # a gap: the per-publication path fills it
            delivered = publication.offset
        return not self._behind(sub.namespace)

    async def offer(self, publication: Publication, text: str, after: int | None = None) -> None:
        """A publication from the hub; `after`, the offset the hub handed out
        before it (what lies between was superseded there, not lost)."""
        sub = self.subs.get(publication.topic)
        if sub is None or self.closed:
            return
        if sub.waiting is not None:
            sub.waiting.append((publication, text, after))
            return
        await self._accept(sub, publication, text, after)

    async def _accept(
        self, sub: Subscription, publication: Publication, text: str, after: int | None = None
    ) -> None:
        if publication.epoch != sub.epoch:
            if not sub.resyncing:
                sub.resyncing, sub.waiting = True, []
                spawn(self._resync(sub))
            return
        if publication.offset <= sub.delivered:
            return
        if publication.offset > sub.delivered + 1 and (after is None or after > sub.delivered):
            # Something handed out after what this connection has is missing
            # (the hub's conflation skips offsets too: those are not gaps).
            sub.waiting = []
            spawn(self._fill(sub, publication, text))
            return
        sub.delivered = publication.offset
        if not self.queue and self.writer is None and not self._behind(sub.namespace):
            if sub.batch:  # a batching subscription gets `publications` frames only
                (text,) = batch_frames(sub.topic, [publication])
            await self.send_text(text)  # keeping up: straight out
            return
        self._enqueue(sub, publication, text)


async def _may_subscribe(namespace: names.Namespace, user: Any, topic: str) -> bool:
    """The namespace's rule, in a thread: it may query the database."""
    return bool(await db(namespace.may_subscribe, user=user, topic=topic))
