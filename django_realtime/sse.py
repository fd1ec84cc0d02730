"""
Provides Server-Sent Events as async Django views: the wire format, the
authentication REST uses, the per-user stream cap, and `pump()`, which runs
one `Stream` (notifications.sse, chat.sse) until its client goes.

(docs/architecture.md, "Why the modules are as they are")
"""

import asyncio
import json
import logging
import math
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import SyncToAsync
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse

from . import bus, credentials, metrics, servers
from .conf import realtime_settings
from .credentials import Credential
from .errors import Unavailable
from .limits import Slots
from .servers import Output
from .tokens import token_user_async

logger = logging.getLogger(__name__)

KEEPALIVE = b": keep-alive\n\n"
# The reconnection delay suggested to EventSource: long enough that a restart
# does not bring every client back within the same second.
RETRY_MS = 3000
# How often a stream checks whether Redis came back (the layer's epoch), the
# same cadence as the WebSocket fan-out's refresher.
EPOCH_POLL_SECONDS = 1.0
MAX_EVENT_ID_DIGITS = 18  # below 2**63: anything longer is forged

# Open streams per user (SSE_MAX_STREAMS_PER_USER), across processes with Redis.
open_streams = Slots("sse")


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


def release_request_thread() -> None:
    """Let go of the thread Django keeps for this request while it streams.

    Under ASGI, Django runs each request's sync middleware on a one-thread
    executor of the request's own, kept until the response ends: for a stream
    open for hours, one idle OS thread per stream. Once the body is being
    iterated every middleware has run, so the executor can go; anything
    thread-sensitive later (response.close()) gets a fresh one for a moment.
    asgiref has no public way to do this: the two names are in
    django_realtime.internals' register, checked at start-up.
    """
    context = SyncToAsync.thread_sensitive_context.get(None)
    if context is None:
        return
    executor = SyncToAsync.context_to_thread_executor.pop(context, None)
    if executor is not None:
        executor.shutdown(wait=False)


# --- authentication and responses --------------------------------------------------


def error_response(status: int, detail: str, code: str | None = None) -> JsonResponse:
    """The shape the REST API gives errors (django_realtime.rest.exception_handler)."""
    body = {"detail": detail} if code is None else {"detail": detail, "code": code}
    response = JsonResponse(body, status=status)
    if status == 401:
        response["WWW-Authenticate"] = "Token"
    return response


async def authenticate(request: HttpRequest) -> tuple[Any, HttpResponse | None]:
    """The user, as REST decides it: a Token header, else the session.
    Raises Unavailable when the database is away."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "token":
        user = await token_user_async(key.strip()) if key.strip() else None
        if user is None:
            return None, error_response(401, "Invalid token.")
        return user, None
    user = await request.auser()
    if not user.is_authenticated:
        return None, error_response(401, "Authentication credentials were not provided.")
    return user, None


async def take_stream_slot(user_id: int) -> tuple[str, HttpResponse | None]:
    """A slot for a new stream of the user (its name, for the stream to give
    back), or the 429 when the user has SSE_MAX_STREAMS_PER_USER open."""
    slot = uuid.uuid4().hex
    cap = realtime_settings.SSE_MAX_STREAMS_PER_USER
    if not await open_streams.take(user_id, slot, cap):
        response = error_response(429, f"at most {cap} open streams per user", "RATE_LIMITED")
        response["Retry-After"] = "10"
        return slot, response
    return slot, None


# --- the streams -----------------------------------------------------------------------


class Stream:
    """What one stream sends: its groups, a head with the backlog, live events,
    and a catch-up from the database at each refresh. Methods return the
    chunks to write; a database outage raises Unavailable."""

    groups: list[str]
    user_id: int
    done = False  # set to end the stream after the chunks returned with it

    async def attach(self, inbox: bus.Inbox) -> None:
        """Before start(): the stream's inbox, which also takes events from
        its own process (Inbox.put_local: the topic hub's rounds)."""

    async def detach(self) -> None:
        """The stream has ended (whatever attach() joined, it leaves)."""

    async def start(self) -> list[bytes]:
        raise NotImplementedError

    async def more(self) -> list[bytes]:
        """After start(), the backlog's next page, sent once the socket has
        taken most of the one before; [] when there is no more."""
        return []

    async def on_event(self, event: dict[str, Any]) -> list[bytes]:
        raise NotImplementedError

    async def catch_up(self) -> list[bytes]:
        raise NotImplementedError


async def pump(
    stream: Stream,
    credential: Credential | None = None,
    slot: str | None = None,
    output: Output | None = None,
) -> AsyncIterator[bytes]:
    """Join the groups, send the head and backlog, then live events, a
    keep-alive after each silence and a catch-up at each refresh, until the
    client goes (Django cancels the response), the stream's time is up or
    the credential it was opened with ends (django_realtime.credentials)."""
    release_request_thread()
    loop = asyncio.get_running_loop()
    keepalive = float(realtime_settings.SSE_KEEPALIVE_SECONDS)
    refresh_every = float(realtime_settings.GROUP_REFRESH_SECONDS)
    lifetime = float(realtime_settings.SSE_MAX_STREAM_SECONDS)
    # Jittered, so streams opened together do not all reconnect together.
    deadline = loop.time() + lifetime * random.uniform(0.9, 1.0) if lifetime else math.inf
    if slot is None:  # not taken by a view (take_stream_slot): uncapped
        slot = uuid.uuid4().hex
        await open_streams.take(stream.user_id, slot, 0)
    inbox = bus.Inbox(stream.groups, local=True)
    checked_at = loop.time()
    try:
        await inbox.open()
        await stream.attach(inbox)
        try:
            yield b"".join(await stream.start())
            while page := await stream.more():
                if output is not None and not await servers.output_taken(output.pending):
                    metrics.OUTPUT_OVERFLOWS.inc()
                    logger.info("ending a stream: its client stopped reading its backlog")
                    return  # the client reconnects with its Last-Event-ID
                yield b"".join(page)
        except Unavailable:
            logger.warning("stream could not read its backlog: the database is away")
            return  # the client reconnects with its Last-Event-ID
        last_write = loop.time()
        next_refresh = last_write + refresh_every * random.uniform(0.5, 1.0)
        poll = EPOCH_POLL_SECONDS if bus.watches_epoch() else math.inf
        while not stream.done:
            now = loop.time()
            wake = min(last_write + keepalive, next_refresh, deadline, now + poll)
            event = await inbox.next(timeout=wake - now)
            chunks: list[bytes] = []
            now = loop.time()
            recheck = now - checked_at >= realtime_settings.SESSION_RECHECK_SECONDS
            if event is not None and event.get("type") == credentials.END:
                if credentials.ends(event, credential):
                    return  # the session ended: the client's reconnect gets 401
                event = None
            elif event is not None and event.get("type") == credentials.RECHECK:
                recheck, event = True, None
            if recheck:
                checked_at = now
                if not await credentials.still_valid_async(
                    user_id=stream.user_id, credential=credential
                ):
                    return
            if event is not None:
                try:
                    chunks = await stream.on_event(event)
                except Unavailable:
                    pass  # the next refresh catches up
            now = loop.time()
            if not stream.done and (inbox.stale or now >= next_refresh):
                await inbox.refresh()
                await open_streams.renew(stream.user_id, slot)
                try:
                    chunks += await stream.catch_up()
                except Unavailable:
                    logger.warning("stream could not catch up: the database is away")
                next_refresh = now + refresh_every * random.uniform(0.5, 1.0)
            if now >= deadline:
                stream.done = True  # EventSource reconnects with Last-Event-ID
            if not chunks and now - last_write >= keepalive:
                chunks = [KEEPALIVE]
            if chunks:
                if output is not None and over_output_cap(output):
                    return  # the client reconnects with its Last-Event-ID
                yield b"".join(chunks)
                last_write = loop.time()
    finally:
        try:
            await stream.detach()
        finally:
            await open_streams.give_back(stream.user_id, slot)
            await inbox.close()


def over_output_cap(output: Output) -> bool:
    """Whether the socket holds more than WS_MAX_PENDING_OUTPUT_BYTES of the
    stream not yet taken (a client that stopped reading): then the stream
    ends, counted, and its client resumes by Last-Event-ID."""
    cap = realtime_settings.WS_MAX_PENDING_OUTPUT_BYTES
    if not cap or output.pending() <= cap:
        return False
    metrics.OUTPUT_OVERFLOWS.inc()
    logger.info("ending a stream: its client stopped reading (output over limit)")
    return True


def event_stream_response(
    stream: Stream,
    credential: Credential | None = None,
    slot: str | None = None,
    request: HttpRequest | None = None,
) -> StreamingHttpResponse:
    scope = getattr(request, "scope", None)  # an ASGI request's
    output = servers.output_of(None, scope) if isinstance(scope, dict) else None
    response = StreamingHttpResponse(
        pump(stream, credential, slot, output), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response
