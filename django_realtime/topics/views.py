"""
Provides the HTTP side of topics: `POST /api/topics/{topic}/publish/` and
the SSE stream `GET /events/topics/{topic}/` (docs/topics.md). chat.urls
mounts both under the site's prefix.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, HttpResponseBase
from django.views.decorators.http import require_GET
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from .. import bus
from ..credentials import credential_of
from ..errors import BadRequest, ClientError, Forbidden
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
from .history import Publication, history, replay
from .publishing import check, publish_now
from .subscriptions import MAX_EPOCH_CHARS, _may_subscribe


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


class TopicStream(Stream):
    """A topic's publications; resumed by `EPOCH:OFFSET`."""

    def __init__(self, *, user: Any, topic: str, namespace: names.Namespace, position: Any):
        self.user = user
        self.user_id = user.pk
        self.topic = topic
        self.namespace = namespace
        self.since_epoch, self.since = position
        self.epoch = ""
        self.delivered = 0
        self.groups = [bus.topic_group(topic), bus.user_group(user.pk)]

    async def start(self) -> list[bytes]:
        state = await history().state(self.topic, namespace=self.namespace)
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
        """The events for `publications`: those the user may see."""
        return [_event(p) for p in await visibility.visible(publications, self.user)]

    async def on_event(self, event: dict[str, Any]) -> list[bytes]:
        if event.get("type") != "topic.publication" or event.get("topic") != self.topic:
            return []
        publication = Publication.from_event(event)
        if publication.epoch != self.epoch:
            self.since, self.since_epoch = self.delivered, None  # resync: latest values
            return await self.start()
        if publication.offset <= self.delivered:
            return []
        missed: list[Publication] = []
        if publication.offset > self.delivered + 1:
            state = await history().state(self.topic, namespace=self.namespace)
            missed = [
                p
                for p in state.publications
                if state.epoch == self.epoch and self.delivered < p.offset < publication.offset
            ]
        self.delivered = publication.offset
        return await self.render([*missed, publication])

    async def catch_up(self) -> list[bytes]:
        state = await history().state(self.topic, namespace=self.namespace)
        if state.epoch != self.epoch:
            self.since, self.since_epoch = self.delivered, None
            return await self.start()
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

    async def start(self) -> list[bytes]:
        state = await history().state(self.topic, namespace=self.namespace)
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
            html = fragments.frame(self.fmt, action, target, str(fragment.get("html") or ""))
            position = event_id(publication.epoch, publication.offset)
            chunks.append(fragments.sse_message(html, position))
        return chunks


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
