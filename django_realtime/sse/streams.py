"""
Provides `Stream`, what one Server-Sent Events stream sends, and `pump()`,
which runs one (notifications.sse, chat.sse, topics.views) until its client
goes: groups joined first, then the backlog, live events, keep-alives and a
catch-up at each refresh. Why: docs/architecture.md, "django_realtime.sse".
"""

import asyncio
import logging
import math
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import SyncToAsync
from django.http import HttpRequest, StreamingHttpResponse

from .. import bus, credentials, metrics, servers
from ..conf import realtime_settings
from ..credentials import Credential
from ..errors import Unavailable
from ..servers import Output
from .admission import open_streams
from .wire import KEEPALIVE

logger = logging.getLogger(__name__)

# How often a stream checks whether Redis came back (the layer's epoch), the
# same cadence as the WebSocket fan-out's refresher.
EPOCH_POLL_SECONDS = 1.0


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
