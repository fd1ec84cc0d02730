"""
Provides the Server-Sent Events streams, as async Django views:

- `GET /events/notifications/`: the user's notifications (`event: notification`,
  `id:` the notification id, data the WebSocket `notification` frame);
- `GET /events/rooms/{slug}/`: a room's messages, read-only (`event: message`,
  `id:` the seq, data the WebSocket `message` frame).

Authentication is the same as REST (`Authorization: Token …` or the session
cookie): anonymous 401, a forbidden room 403, an unknown one 404.

Each stream is an async generator: no worker thread is held while it is open.
It joins its layer groups first, then replays from the database what came
after `Last-Event-ID`, then forwards live events; the layer is a doorbell and
the database the record, so each event goes out once, in id order. A comment
line goes out after SSE_KEEPALIVE_SECONDS of silence.
"""

import asyncio
import json
import logging
import math
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

from asgiref.sync import SyncToAsync
from channels.db import database_sync_to_async
from django.db import Error as DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.http import require_GET

from chat import events as chat_events
from chat import selectors as chat_selectors
from chat.auth import token_user
from chat.models import Room
from django_realtime.conf import realtime_settings
from django_realtime.errors import ClientError

from . import events, selectors

logger = logging.getLogger(__name__)

KEEPALIVE = b": keep-alive\n\n"
# The reconnection delay suggested to EventSource: long enough that a restart
# does not bring every client back within the same second.
RETRY_MS = 3000
# How often a stream checks whether Redis came back (project.layers epoch),
# the same cadence as the WebSocket consumer's refresher.
EPOCH_POLL_SECONDS = 1.0
MAX_EVENT_ID_DIGITS = 18  # below 2**63: anything longer is forged

# Open streams per user in this process (SSE_MAX_STREAMS_PER_USER).
_open_streams: Counter[int] = Counter()


def sse_event(*, event: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    """One event. json.dumps escapes newlines, so `data` is a single line.
    An event without `id:` leaves the client's Last-Event-ID as it was."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"{head}event: {event}\ndata: {body}\n\n".encode()


def stream_head(position: int | None) -> bytes:
    """The first chunk: the retry hint and, on a fresh stream, a bare `id:`
    that sets the client's Last-Event-ID to "now" without an event, so even a
    first reconnect resumes with nothing lost."""
    head = f"retry: {RETRY_MS}\n"
    if position is not None:
        head += f"id: {position}\n"
    return (head + "\n").encode()


def last_event_id(request: HttpRequest) -> int | None:
    """Last-Event-ID (header, or ?last_event_id= for clients that cannot set
    headers); None if absent or not a non-negative integer below 2**63."""
    raw = request.headers.get("Last-Event-ID")
    if raw is None:
        raw = request.GET.get("last_event_id")
    raw = (raw or "").strip()
    if not raw.isdigit() or not raw.isascii() or len(raw) > MAX_EVENT_ID_DIGITS:
        return None
    return int(raw)


async def db(fn: Callable[..., Any], **kwargs: Any) -> Any:
    """Run a selector on the shared thread pool, not on a thread of this
    request's own (see release_request_thread)."""
    return await database_sync_to_async(fn, thread_sensitive=False)(**kwargs)


def release_request_thread() -> None:
    """Let go of the thread Django keeps for this request while it streams.

    Under ASGI, Django runs each request's sync middleware on a one-thread
    executor of the request's own, kept until the response ends: for a stream
    open for hours, one idle OS thread per stream. Once the body is being
    iterated every middleware has run, so the executor can go; anything
    thread-sensitive later (response.close()) gets a fresh one for a moment.
    """
    context = SyncToAsync.thread_sensitive_context.get(None)
    if context is None:
        return
    executor = SyncToAsync.context_to_thread_executor.pop(context, None)
    if executor is not None:
        executor.shutdown(wait=False)


# --- authentication and responses --------------------------------------------------


def error_response(status: int, detail: str, code: str | None = None) -> JsonResponse:
    """The shape DRF and chat.views.exception_handler give errors under /api/."""
    body = {"detail": detail} if code is None else {"detail": detail, "code": code}
    response = JsonResponse(body, status=status)
    if status == 401:
        response["WWW-Authenticate"] = "Token"
    return response


async def authenticate(request: HttpRequest) -> tuple[Any, HttpResponse | None]:
    """The user, as REST decides it: a Token header, else the session."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "token":
        user = await db(token_user, key=key.strip()) if key.strip() else None
        if user is None:
            return None, error_response(401, "Invalid token.")
        return user, None
    user = await request.auser()
    if not user.is_authenticated:
        return None, error_response(401, "Authentication credentials were not provided.")
    return user, None


def over_stream_cap(user_id: int) -> HttpResponse | None:
    cap = realtime_settings.SSE_MAX_STREAMS_PER_USER
    if cap and _open_streams[user_id] >= cap:
        response = error_response(429, f"at most {cap} open streams per user", "RATE_LIMITED")
        response["Retry-After"] = "10"
        return response
    return None


# --- the streams -----------------------------------------------------------------------


class Stream:
    """What one stream sends: its groups, a head with the backlog, live events,
    and a catch-up from the database at each refresh."""

    groups: list[str]
    user_id: int
    done = False  # set to end the stream after the chunks returned with it

    async def start(self) -> list[bytes]:
        raise NotImplementedError

    async def on_event(self, event: dict[str, Any]) -> list[bytes]:
        raise NotImplementedError

    async def catch_up(self) -> list[bytes]:
        raise NotImplementedError


class NotificationStream(Stream):
    """The user's notifications, by id.

    Per recipient, ids commit in order (notifications.services locks the
    recipient), so "everything after the last id sent" is exact. A doorbell
    is answered from the database with every id after the last one sent: a
    doorbell overtaken by a later one loses nothing, and a burst of doorbells
    costs one read.
    """

    def __init__(self, *, user_id: int, last: int | None):
        self.user_id = user_id
        self.groups = [chat_events.user_group(user_id)]
        self.last = last

    async def start(self) -> list[bytes]:
        position, rows, truncated = await db(self._backlog, user_id=self.user_id, last=self.last)
        fresh = position is not None
        self.last = position if fresh else self.last
        chunks = [stream_head(position if fresh else None)]
        if truncated:
            chunks.append(sse_event(event="truncated", data={"type": "truncated"}))
        return chunks + self._send(rows)

    @staticmethod
    def _backlog(*, user_id: int, last: int | None) -> tuple[int | None, list, bool]:
        """(a fresh position or None, rows after `last`, whether older were left out)."""
        if last is not None and last > selectors.max_notification_id():
            last = None  # an id nobody was ever given: forged, or from another database
        if last is None:
            return selectors.last_notification_id(user_id=user_id), [], False
        rows, truncated = selectors.notifications_after(
            user_id=user_id, after=last, limit=realtime_settings.CHAT_RESUME_MAX_MESSAGES
        )
        return None, rows, truncated

    async def on_event(self, event: dict[str, Any]) -> list[bytes]:
        event_id = event.get("id")
        if event.get("type") != events.NOTIFICATION or not isinstance(event_id, int):
            return []
        if event_id <= self.last:
            return []  # sent already, from the backlog or an earlier doorbell
        try:
            return await self.catch_up()
        except DatabaseError as exc:
            logger.warning("notification stream could not read the database: %r", exc)
            return []  # the next refresh catches up

    async def catch_up(self) -> list[bytes]:
        rows, _ = await db(
            selectors.notifications_after,
            user_id=self.user_id,
            after=self.last,
            limit=realtime_settings.CHAT_RESUME_MAX_MESSAGES,
        )
        return self._send(rows)

    def _send(self, rows: list) -> list[bytes]:
        chunks = []
        for notification in rows:
            if notification.pk > self.last:
                chunks.append(
                    sse_event(
                        event="notification",
                        data=events.notification_frame(notification),
                        event_id=notification.pk,
                    )
                )
                self.last = notification.pk
        return chunks


class RoomStream(Stream):
    """A room's messages by seq, delivered as chat/consumers.py does: drop
    what was sent, fill a gap from the database before a message ahead of it.
    Also joins the user's group, so a ban ends the stream (`event: kicked`)."""

    def __init__(self, *, user: Any, room: Room, since: int | None):
        self.user = user
        self.user_id = user.pk
        self.room = room
        self.since = since
        self.delivered = 0
        self.groups = [chat_events.room_group(room.pk), chat_events.user_group(user.pk)]

    async def start(self) -> list[bytes]:
        rows, last_seq = await db(self._backlog, room_id=self.room.pk, since=self.since)
        fresh = self.since is None
        # A Last-Event-ID beyond the room's end (a database restored) resumes
        # from the end rather than skipping future messages, as `join` does.
        self.delivered = last_seq if fresh else min(self.since, last_seq)
        chunks = [stream_head(last_seq if fresh else None)]
        if not fresh and last_seq - self.since > realtime_settings.CHAT_RESUME_MAX_MESSAGES:
            chunks.append(
                sse_event(
                    event="truncated",
                    data={"type": "truncated", "room": self.room.slug, "last_seq": last_seq},
                )
            )
        return chunks + self._send(rows)

    @staticmethod
    def _backlog(*, room_id: int, since: int | None) -> tuple[list, int]:
        last_seq = chat_selectors.room_last_seq(room_id=room_id)
        if since is None or since >= last_seq:
            return [], last_seq
        rows = chat_selectors.messages_since(
            room_id=room_id,
            since=since,
            until=last_seq,
            limit=realtime_settings.CHAT_RESUME_MAX_MESSAGES,
        )
        return rows, last_seq

    async def on_event(self, event: dict[str, Any]) -> list[bytes]:
        if event.get("room_id") != self.room.pk:
            return []
        kind, payload = event.get("type"), event.get("payload")
        if kind == chat_events.MESSAGE:
            return await self._deliver(payload)
        if kind == chat_events.MESSAGE_DELETED:
            # No id: a deletion must not move the client's Last-Event-ID back.
            return [sse_event(event="message_deleted", data=payload)]
        if kind == chat_events.KICKED:
            self.done = True
            return [sse_event(event="kicked", data=payload)]
        return []

    async def catch_up(self) -> list[bytes]:
        """Is the user still allowed in? Then whatever the layer dropped."""
        try:
            await db(chat_selectors.room_access, user=self.user, room=self.room)
        except ClientError as exc:
            self.done = True
            payload = {"type": "kicked", "room": self.room.slug, "reason": exc.message}
            return [sse_event(event="kicked", data=payload)]
        last_seq = await db(chat_selectors.room_last_seq, room_id=self.room.pk)
        return await self._fill(until=last_seq)

    async def _deliver(self, payload: dict[str, Any]) -> list[bytes]:
        seq = payload["seq"]
        if seq <= self.delivered:
            return []  # a duplicate doorbell, or one the backlog covered
        chunks = []
        if seq > self.delivered + 1:
            chunks = await self._fill(until=seq - 1)
            if self.delivered < seq - 1:
                return chunks  # the database is unreachable: the next refresh fills in
        chunks.append(sse_event(event="message", data=payload, event_id=seq))
        self.delivered = seq
        return chunks

    async def _fill(self, *, until: int) -> list[bytes]:
        """Seqs delivered+1..until from the database: all committed, as seqs
        commit in order and a later one has been seen."""
        if until <= self.delivered:
            return []
        try:
            rows = await db(
                chat_selectors.messages_since,
                room_id=self.room.pk,
                since=self.delivered,
                until=until,
                limit=realtime_settings.CHAT_RESUME_MAX_MESSAGES,
            )
        except DatabaseError as exc:
            logger.warning("room stream could not read the database: %r", exc)
            return []
        return self._send(rows)

    def _send(self, rows: list) -> list[bytes]:
        chunks = []
        for message in rows:
            if message.seq > self.delivered and not message.is_deleted:
                chunks.append(
                    sse_event(
                        event="message",
                        data=chat_events.message_payload(message, self.room.slug),
                        event_id=message.seq,
                    )
                )
            self.delivered = max(self.delivered, message.seq)
        return chunks


async def pump(stream: Stream) -> AsyncIterator[bytes]:
    """Join the groups, send the head and backlog, then live events, a
    keep-alive after each silence and a catch-up at each refresh, until the
    client goes (Django cancels the response) or the stream's time is up."""
    release_request_thread()
    loop = asyncio.get_running_loop()
    keepalive = float(realtime_settings.SSE_KEEPALIVE_SECONDS)
    refresh_every = float(realtime_settings.GROUP_REFRESH_SECONDS)
    lifetime = float(realtime_settings.SSE_MAX_STREAM_SECONDS)
    # Jittered, so streams opened together do not all reconnect together.
    deadline = loop.time() + lifetime * random.uniform(0.9, 1.0) if lifetime else math.inf
    _open_streams[stream.user_id] += 1
    subscription = events.Subscription(stream.groups)
    try:
        await subscription.open()
        try:
            yield b"".join(await stream.start())
        except DatabaseError as exc:
            logger.warning("stream could not read its backlog: %r", exc)
            return  # the client reconnects with its Last-Event-ID
        last_write = loop.time()
        next_refresh = last_write + refresh_every * random.uniform(0.5, 1.0)
        poll = EPOCH_POLL_SECONDS if subscription.watches_epoch else math.inf
        while not stream.done:
            now = loop.time()
            wake = min(last_write + keepalive, next_refresh, deadline, now + poll)
            event = await subscription.next(timeout=wake - now)
            chunks = await stream.on_event(event) if event is not None else []
            now = loop.time()
            if not stream.done and (subscription.stale or now >= next_refresh):
                await subscription.refresh()
                try:
                    chunks += await stream.catch_up()
                except DatabaseError as exc:
                    logger.warning("stream could not catch up: %r", exc)
                next_refresh = now + refresh_every * random.uniform(0.5, 1.0)
            if now >= deadline:
                stream.done = True  # EventSource reconnects with Last-Event-ID
            if not chunks and now - last_write >= keepalive:
                chunks = [KEEPALIVE]
            if chunks:
                yield b"".join(chunks)
                last_write = loop.time()
    finally:
        _open_streams[stream.user_id] -= 1
        if _open_streams[stream.user_id] <= 0:
            del _open_streams[stream.user_id]
        await subscription.close()


def event_stream_response(stream: Stream) -> StreamingHttpResponse:
    response = StreamingHttpResponse(pump(stream), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response


# --- views ---------------------------------------------------------------------------


@require_GET
async def notification_events(request: HttpRequest) -> HttpResponse:
    """The user's notifications as Server-Sent Events."""
    try:
        user, error = await authenticate(request)
    except DatabaseError:
        return error_response(503, "storage is unavailable; retry shortly", "UNAVAILABLE")
    if error is not None:
        return error
    refused = over_stream_cap(user.pk)
    if refused is not None:
        return refused
    return event_stream_response(NotificationStream(user_id=user.pk, last=last_event_id(request)))


@require_GET
async def room_events(request: HttpRequest, slug: str) -> HttpResponse:
    """A room's messages as Server-Sent Events, read-only."""
    try:
        user, error = await authenticate(request)
        if error is not None:
            return error
        access = await db(chat_selectors.room_access_by_slug, user=user, slug=slug)
    except ClientError as exc:
        return error_response(exc.status, exc.message, exc.code)
    except DatabaseError:
        return error_response(503, "storage is unavailable; retry shortly", "UNAVAILABLE")
    refused = over_stream_cap(user.pk)
    if refused is not None:
        return refused
    return event_stream_response(
        RoomStream(user=user, room=access.room, since=last_event_id(request))
    )
