"""
Provides `GET /events/rooms/{slug}/`: a room's messages as Server-Sent
Events, read-only (`event: message`, `id:` the seq, data the WebSocket
`message` frame), on django_realtime.sse, delivered by the same cursor as
the WebSocket (chat.streams).

Authentication is the same as REST: anonymous 401, a forbidden room 403, an
unknown one 404. The stream also joins the user's group, so a ban ends it
(`event: kicked`).
"""

from typing import Any

from django.http import HttpRequest, HttpResponseBase
from django.views.decorators.http import require_GET

from django_realtime import bus
from django_realtime.asyncdb import db
from django_realtime.credentials import credential_of
from django_realtime.errors import ClientError
from django_realtime.sse import (
    Stream,
    authenticate,
    error_response,
    event_stream_response,
    last_event_id,
    sse_event,
    stream_head,
    take_stream_slot,
)

from . import events, selectors, streams
from .models import Room


class RoomStream(Stream):
    """A room's messages by seq."""

    def __init__(self, *, user: Any, room: Room, since: int | None):
        self.user = user
        self.user_id = user.pk
        self.room = room
        self.since = since
        self.cursor = streams.room_cursor(room_id=room.pk, room_slug=room.slug)
        self.groups = [bus.room_group(room.pk), bus.user_group(user.pk)]

    async def start(self) -> list[bytes]:
        last_seq = await streams.last_seq(room_id=self.room.pk)
        streams.start(self.cursor, since=self.since, last_seq=last_seq)
        self.pages = streams.replay(
            self.cursor, room_id=self.room.pk, room_slug=self.room.slug, last_seq=last_seq
        )
        chunks = [stream_head(last_seq if self.since is None else None)]
        if streams.truncated(since=self.since, last_seq=last_seq):
            chunks.append(
                sse_event(
                    event="truncated",
                    data={"type": "truncated", "room": self.room.slug, "last_seq": last_seq},
                )
            )
        return chunks

    async def more(self) -> list[bytes]:
        """The replay's next page ([] once it is all sent)."""
        async for page in self.pages:
            if page:
                return self._chunks(page)
        return []

    async def on_event(self, event: dict[str, Any]) -> list[bytes]:
        if event.get("room_id") != self.room.pk:
            return []
        kind, payload = event.get("type"), event.get("payload")
        if not isinstance(payload, dict):
            return []
        if kind == events.MESSAGE:
            return self._chunks(
                [
                    frame
                    for message in events.message_payloads(event)
                    for frame in await self.cursor.offer(message["seq"], message)
                ]
            )
        if kind == events.MESSAGE_DELETED:
            # No id: a deletion must not move the client's Last-Event-ID back.
            return [sse_event(event="message_deleted", data=payload)]
        if kind == events.KICKED:
            self.done = True
            return [sse_event(event="kicked", data=payload)]
        return []

    async def catch_up(self) -> list[bytes]:
        """Is the user still allowed in? Then whatever the layer dropped."""
        try:
            await db(selectors.room_access, user=self.user, room=self.room)
        except ClientError as exc:
            if exc.code == "UNAVAILABLE":
                raise
            self.done = True
            payload = {"type": "kicked", "room": self.room.slug, "reason": exc.message}
            return [sse_event(event="kicked", data=payload)]
        last_seq = await streams.last_seq(room_id=self.room.pk)
        return self._chunks(await self.cursor.catch_up(last_seq))

    @staticmethod
    def _chunks(frames: list[dict[str, Any]]) -> list[bytes]:
        return [sse_event(event="message", data=f, event_id=f["seq"]) for f in frames]


@require_GET
async def room_events(request: HttpRequest, slug: str) -> HttpResponseBase:
    """A room's messages as Server-Sent Events, read-only."""
    try:
        user, error = await authenticate(request)
        if error is not None:
            return error
        access = await db(selectors.room_access_by_slug, user=user, slug=slug)
    except ClientError as exc:
        return error_response(exc.status, exc.message, exc.code)
    slot, refused = await take_stream_slot(user.pk)
    if refused is not None:
        return refused
    return event_stream_response(
        RoomStream(user=user, room=access.room, since=last_event_id(request)),
        credential_of(request),
        slot=slot,
        request=request,
    )
