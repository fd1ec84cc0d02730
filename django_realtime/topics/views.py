"""
Provides the HTTP side of topics: `POST /api/topics/{topic}/publish/` and
the SSE stream `GET /events/topics/{topic}/` (docs/topics.md). chat.urls
mounts both under the site's prefix.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.http import HttpRequest, HttpResponseBase
from django.views.decorators.http import require_GET
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from .. import bus
from ..conf import realtime_settings
from ..credentials import credential_of
from ..errors import BadRequest, ClientError, Forbidden, Unavailable
from ..rest import RealtimeAPIView, body_object, extend_schema, request_user
from ..sse import (
    Stream,
    authenticate,
    error_response,
    event_stream_response,
    sse_event,
    take_stream_slot,
)
from . import fragments, names, visibility
from .history import Publication, State, history, replay
from .hub import Round, hub
from .publishing import check, publish_now
from .subscriptions import MAX_EPOCH_CHARS, _may_subscribe

logger = logging.getLogger(__name__)


class PublishSerializer(serializers.Serializer):
    data = serializers.JSONField(  # type: ignore[assignment]  # DRF pops declared fields
        help_text="a JSON object: what subscribers receive"
    )
    key = serializers.CharField(required=False, help_text="conflation key (at most 200 chars)")
    idempotency_key = serializers.CharField(
        required=False, help_text="publishes once per key within the history's lifetime"
    )


class PublishedSerializer(serializers.Serializer):
    topic = serializers.CharField()
    offset = serializers.IntegerField()
    epoch = serializers.CharField()


class PublishView(RealtimeAPIView):
    """Publish on a topic (staff by default: the namespace's `publish` rule)."""

    @extend_schema(request=PublishSerializer, responses={201: PublishedSerializer})
    def post(self, request: Request, topic: str) -> Response:
        namespace = names.parse(topic)
        user = request_user(request)
        if not namespace.may_publish(user, topic):
            raise Forbidden(f"you may not publish on {topic!r}")
        body = body_object(request)
        unknown = set(body) - {"data", "key", "idempotency_key"}
        if unknown:
            raise BadRequest(f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")
        if not isinstance(body.get("data"), dict):
            raise BadRequest("'data' must be a JSON object")
        data, key, idempotency_key = body["data"], body.get("key"), body.get("idempotency_key")
        check(topic, data, key, idempotency_key)
        published = publish_now(topic, data, key=key, idempotency_key=idempotency_key)
        publication = published.publication
        response = Response(
            {"topic": topic, "offset": publication.offset, "epoch": publication.epoch},
            status=status.HTTP_201_CREATED,
        )
        if published.replayed:
            response["Idempotent-Replayed"] = "true"
        return response


# --- SSE -------------------------------------------------------------------------------
def last_position(request: HttpRequest) -> tuple[str | None, int | None]:
    """Last-Event-ID `EPOCH:OFFSET` (header, or ?last_event_id=); (None, None)
    when absent or malformed."""
    raw = request.headers.get("Last-Event-ID") or request.GET.get("last_event_id") or ""
    epoch, colon, offset = raw.strip().partition(":")
    if (
        not colon
        or not epoch
        or len(epoch) > MAX_EPOCH_CHARS
        or not (offset.isascii() and offset.isdigit() and len(offset) <= 18)
    ):
        return None, None
    return epoch, int(offset)


def event_id(epoch: str, offset: int) -> str:
    return f"{epoch}:{offset}"


# What wakes a stream's pump when the hub offered it rounds (a local event,
# never through the layer).
ROUNDS = "topic.rounds"


class TopicStream(Stream):
    """A topic's publications; resumed by `EPOCH:OFFSET`.

    A member of the process's topic hub (topics.hub), as a WebSocket
    connection is: the hub reads each publication once for the process,
    fills a gap once and hands each round to every stream, whose pump it
    wakes with a local event; the frames of a round are built once for all
    streams (Round.shared). The stream's own layer channel is in its user's
    group only (session end, recheck)."""

    def __init__(self, *, user: Any, topic: str, namespace: names.Namespace, position: Any):
        self.user = user
        self.user_id = user.pk
        self.topic = topic
        self.namespace = namespace
        self.since_epoch, self.since = position
        self.epoch = ""
        self.delivered = 0
        self.groups = [bus.user_group(user.pk)]
        self.inbox: bus.Inbox | None = None
        self.rounds: list[Round] = []  # offered by the hub, not yet sent
        self.woken = False  # a ROUNDS event waits in the inbox
        self.lost = False  # rounds were dropped (too many waited): catch up from the history
        self.joined = False

    # --- the hub's member -------------------------------------------------------------
    async def attach(self, inbox: bus.Inbox) -> None:
        """Join the hub before the replay's history read: a round the hub
        hands out meanwhile waits and goes out after the replay, each
        offset once (the replay may already have sent it)."""
        self.inbox = inbox
        self.joined = True
        await hub().add(self.topic, self)

    async def detach(self) -> None:
        if self.joined:
            self.joined = False
            await hub().remove(self.topic, self)

    async def offer_round(self, round: Round) -> None:
        """A round of the hub's: kept for the pump, which it wakes."""
        if self.inbox is None or self.done:
            return
        if len(self.rounds) >= realtime_settings.TOPICS_MAX_QUEUE:
            self.rounds.clear()  # the pump is far behind: the history covers them
            self.lost = True
        self.rounds.append(round)
        if not self.woken:
            self.woken = True
            self.inbox.put_local({"type": ROUNDS})

    # --- the stream -------------------------------------------------------------------
    async def start(self) -> list[bytes]:
        return await self.open(await history().state(self.topic, namespace=self.namespace))

    async def open(self, state: State) -> list[bytes]:
        """The head (and `subscribed`) with the replay from `state`."""
        result = replay(state, since=self.since, epoch=self.since_epoch)
        self.epoch, self.delivered = result.epoch, result.offset
        head = f"retry: 3000\nid: {event_id(result.epoch, result.offset)}\n\n".encode()
        subscribed = {
            "type": "subscribed",
            "topic": self.topic,
            "offset": result.offset,
            "epoch": result.epoch,
            "recovered": result.recovered,
        }
        return [head, sse_event(event="subscribed", data=subscribed)] + await self.render(
            result.publications
        )

    async def render(self, publications: list[Publication]) -> list[bytes]:
        """The events for `publications` (from the history): those the user may see."""
        return [_event(p) for p in await visibility.visible(publications, self.user)]

    async def on_event(self, event: dict[str, Any]) -> list[bytes]:
        if event.get("type") != ROUNDS:
            return []
        self.woken = False
        rounds, self.rounds = self.rounds, []
        chunks: list[bytes] = []
        try:
            if self.lost:
                chunks += await self.from_history()
                self.lost = False
            for round in rounds:
                await self.take(round, chunks)
        except Unavailable:
            # What was taken goes out; the rest comes from the history at
            # the pump's next refresh.
            logger.warning("topic %s: the history is away; catching up later", self.topic)
            self.lost = True
        return chunks

    async def take(self, round: Round, chunks: list[bytes]) -> None:
        """What of `round` goes out (into `chunks`): each offset past what
        was sent, in order, the user may see. Its `after` tells an offset
        the hub conflated (skipped, not lost) from a gap, which is filled
        from the history (one read per round for every stream of the
        process); a new epoch resyncs, as a resume into another epoch would."""
        resynced = False
        for publication, after in round.everything:
            if publication.epoch != self.epoch:
                if not resynced:
                    resynced = True
                    chunks += await self.resync(round)
                continue
            if publication.offset <= self.delivered:
                continue
            if publication.offset > self.delivered + 1 and (
                after is None or after > self.delivered
            ):
                chunks += await self.fill(round, publication.offset)
            self.delivered = publication.offset
            chunks += await self.frames(round, publication)

    async def frames(self, round: Round, publication: Publication) -> list[bytes]:
        """`publication`'s event for this user, built once per round: its
        `deleted` (Round.gone) where the user lost sight of its object."""
        allowed = round.allowed.get(publication.offset)
        key: tuple[str, int] = ("sse", publication.offset)
        if allowed is not None and self.user_id not in allowed:
            instead = round.gone(publication)
            if instead is None or self.user_id not in await round.lost(publication):
                return []
            publication, key = instead, ("sse-gone", publication.offset)
        chunk = round.cache.get(key)
        if chunk is None:
            chunk = round.cache[key] = _event(publication)
        return [chunk]

    async def state(self, round: Round) -> State:
        """The history, read once per round for every stream that needs it
        (read after the round was made: it holds what the round skipped)."""
        return await round.shared(
            "state", lambda: history().state(self.topic, namespace=self.namespace)
        )

    async def fill(self, round: Round, offset: int) -> list[bytes]:
        """The gap before `offset` (rare: the hub fills the process's gaps)."""
        state = await self.state(round)
        if state.epoch != self.epoch:
            return []
        return await self.render(
            [p for p in state.publications if self.delivered < p.offset < offset]
        )

    async def resync(self, round: Round) -> list[bytes]:
        """A round in another epoch than the stream's (its history was
        lost): the stream starts again in the history's epoch, not
        recovered. An item of an older epoch than the stream's is dropped."""
        state = await self.state(round)
        if state.epoch == self.epoch:
            return []
        self.since, self.since_epoch = self.delivered, None
        return await self.open(state)

    async def catch_up(self) -> list[bytes]:
        """At the pump's refresh: nothing while the hub holds the topic's
        group (its own refresh catches up once for the process); otherwise
        join again and read the history."""
        held = hub().topics.get(self.topic)
        if (
            not self.lost
            and held is not None
            and self in held.members
            and held.added == bus.epoch()
        ):
            return []
        await hub().add(self.topic, self)
        chunks = await self.from_history()
        self.lost = False
        return chunks

    async def from_history(self) -> list[bytes]:
        state = await history().state(self.topic, namespace=self.namespace)
        if state.epoch != self.epoch:
            self.since, self.since_epoch = self.delivered, None
            return await self.open(state)
        missed = [p for p in state.publications if p.offset > self.delivered]
        self.delivered = max(self.delivered, state.offset)
        return await self.render(missed)


class HtmlTopicStream(TopicStream):
    """A topic's fragments as Turbo Stream or htmx frames (`?format=`,
    topics.fragments): the default `message` event, `id: EPOCH:OFFSET`;
    a resume past the history, or into another epoch, is a `refresh`."""

    def __init__(self, *, fmt: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.fmt = fmt

    async def open(self, state: State) -> list[bytes]:
        result = replay(state, since=self.since, epoch=self.since_epoch)
        self.epoch, self.delivered = result.epoch, result.offset
        head = f"retry: 3000\nid: {event_id(result.epoch, result.offset)}\n\n".encode()
        if self.since is not None and not result.recovered:
            return [head, fragments.sse_message(fragments.frame(self.fmt, "refresh"))]
        return [head, *await self.render(result.publications)]

    async def render(self, publications: list[Publication]) -> list[bytes]:
        chunks = []
        for publication in publications:
            fragment = fragments.fragment_of(publication.data)
            if fragment is None:
                continue  # a JSON publication on the same topic
            action, target = await fragments.action_for(publication, fragment, self.user)
            if action is None:
                continue
            chunks.append(self.message(publication, fragment, action, target))
        return chunks

    async def frames(self, round: Round, publication: Publication) -> list[bytes]:
        """`publication`'s frame for this user: its action decided once per
        round for every member's user, each frame's text built once."""
        fragment = fragments.fragment_of(publication.data)
        if fragment is None:
            return []
        action: str | None
        target: str | None
        if publication.audience is None and "container" not in fragment:
            action, target = str(fragment["action"]), fragment.get("target")
        else:
            actions = await round.shared(
                ("actions", publication.offset),
                lambda: fragments.actions_for(
                    publication, fragment, round.users, round.allowed.get(publication.offset)
                ),
            )
            found = actions.get(self.user_id)
            if found is None:  # not among the round's users: decided for it alone
                found = await fragments.action_for(publication, fragment, self.user)
            action, target = found
        if action is None:
            return []
        key = ("html", self.fmt, action, target, publication.offset)
        chunk = round.cache.get(key)
        if chunk is None:
            chunk = round.cache[key] = self.message(publication, fragment, action, target)
        return [chunk]

    def message(
        self, publication: Publication, fragment: dict, action: str, target: str | None
    ) -> bytes:
        html = fragments.frame(self.fmt, action, target, str(fragment.get("html") or ""))
        return fragments.sse_message(html, event_id(publication.epoch, publication.offset))


def _event(publication: Publication) -> bytes:
    body = json.dumps(publication.frame(), ensure_ascii=False, separators=(",", ":"))
    return (
        f"id: {event_id(publication.epoch, publication.offset)}\n"
        f"event: publication\ndata: {body}\n\n"
    ).encode()


@require_GET
async def topic_events(request: HttpRequest, topic: str) -> HttpResponseBase:
    """A topic's publications as Server-Sent Events; `?format=turbo` or
    `?format=htmx`: its fragments as HTML (contract §10)."""
    fmt = request.GET.get("format")
    if fmt is not None and fmt not in fragments.FORMATS:
        return error_response(400, "'format' is 'turbo' or 'htmx'", "BAD_REQUEST")
    try:
        user, error = await authenticate(request)
        if error is not None:
            return error
        namespace = names.parse(topic)
        if not await _may_subscribe(namespace, user, topic):
            raise names.unknown(topic)
    except ClientError as exc:
        return error_response(exc.status, exc.message, exc.code)
    slot, refused = await take_stream_slot(user.pk)
    if refused is not None:
        return refused
    position = last_position(request)
    stream = (
        TopicStream(user=user, topic=topic, namespace=namespace, position=position)
        if fmt is None
        else HtmlTopicStream(
            fmt=fmt, user=user, topic=topic, namespace=namespace, position=position
        )
    )
    return event_stream_response(stream, credential_of(request), slot=slot, request=request)
