"""
Provides prepare(): what the package needs from the ASGI server it runs
under, applied once when chat.routing is imported (under daphne, the
`realtime.output` extension and the 1012 drain of its own sockets; nothing
under uvicorn, which drains by itself), and output_of(): what a connection's
server holds of its output. Per server: docs/architecture.md, "servers".
"""

import asyncio
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from . import drain, internals
from .conf import realtime_settings
from .daphne_transport import OUTPUT_EXTENSION, tune_daphne

# What output_of reads under uvicorn: its WebSocket protocol's `send` is the
# ASGI send, a bound method whose object holds the asyncio transport (whose
# get_write_buffer_size() is public asyncio API) and the `writable` Event.
UVICORN_INTERNALS: list[internals.Name] = [
    ("uvicorn.protocols.websockets.websockets_sansio_impl", "WebSocketsSansIOProtocol", "send"),
    (
        "uvicorn.protocols.websockets.websockets_sansio_impl",
        "WebSocketsSansIOProtocol.__init__",
        "transport",
    ),
    # The Event its send() waits on while the transport is over its high-water mark.
    (
        "uvicorn.protocols.websockets.websockets_sansio_impl",
        "WebSocketsSansIOProtocol.__init__",
        "writable",
    ),
]


def prepare() -> None:
    """Adjust the server this process runs under; safe to call more than once."""
    if "daphne.server" in sys.modules:
        tune_daphne()
        drain.install_daphne_drain()
    if "uvicorn.protocols.websockets.websockets_sansio_impl" in sys.modules:
        missing = internals.missing(UVICORN_INTERNALS)
        if missing:
            raise ImproperlyConfigured(
                f"django-realtime reads uvicorn's {', '.join(missing)}, which the installed "
                "uvicorn no longer has: pin it or update django_realtime/servers.py."
            )


@dataclass(frozen=True)
class Output:
    """What a WebSocket's server holds of its output: `pending()` bytes not
    yet taken by the socket, and `blocked()`, whether the server's send
    would wait now (uvicorn's does, past its transport's high-water mark;
    daphne's never does)."""

    pending: Callable[[], int]
    blocked: Callable[[], bool]
    # Sends a live text frame at once if it can (True), else does nothing
    # (False): daphne's, through its transport (daphne_transport), where the
    # package's application was given daphne's own send (no middleware of
    # the site to go through).
    send_text: Callable[[str], bool] | None = None


def _never() -> bool:
    return False


def server_send(send: Any) -> Any:
    """The server's own `send` under the wrappers around it that keep it as
    `real_send` (Channels' SessionMiddleware, chat.routing's watch): where
    output_of looks for uvicorn's protocol. Only read, never sent through:
    frames go through the send the package was given (frame_send)."""
    for _ in range(5):
        wrapped = getattr(getattr(send, "__self__", None), "real_send", None)
        if wrapped is None:
            break
        send = wrapped
    return send


# The scope key under which chat.routing's websocket_application leaves the
# `send` it was given, for its consumers' frames (frame_send).
OUTER_SEND = "realtime.send"


def frame_send(send: Any, scope: dict) -> Any:
    """Where a consumer sends its frames: the `send` the package's outermost
    application was given, past the package's own wrappers inside it
    (Channels' SessionMiddleware saves the session on `http.response.start`
    only, chat.routing's watch only notes that something was sent), never past the site's ASGI
    middleware around it; `send` itself where no such application is in
    front (a site routing websocket_urlpatterns() itself)."""
    return scope.get(OUTER_SEND) or send


def own(scope: dict, send: Any) -> dict:
    """The scope the package's outermost application passes on, noting the
    `send` it was given (frame_send); under daphne the connection is claimed
    for the package first (daphne_transport.claim), so its close codes and
    reasons hold even for a consumer that fails before it starts."""
    extension = (scope.get("extensions") or {}).get(OUTPUT_EXTENSION)
    if isinstance(extension, dict) and callable(extension.get("claim")):
        extension["claim"](send)
    return {**scope, OUTER_SEND: send}


def output_of(send: Any, scope: dict | None = None) -> Output | None:
    """The Output of a connection, from its ASGI scope and `send`; None under
    a server it cannot tell for (then output is never held back, only capped
    by the server). Under daphne this claims a WebSocket connection for the
    package (daphne_transport.claim)."""
    scope = scope or {}
    extension = (scope.get("extensions") or {}).get(OUTPUT_EXTENSION)
    if isinstance(extension, dict) and callable(extension.get("pending")):
        claim = extension.get("claim")
        send_text = claim(frame_send(send, scope)) if callable(claim) else None
        return Output(extension["pending"], _never, send_text)  # daphne (daphne_transport)
    send = server_send(frame_send(send, scope))
    owner: Any = getattr(send, "__self__", None)  # uvicorn: the protocol's bound `send`
    transport: Any = getattr(owner, "transport", None)
    writable = getattr(owner, "writable", None)
    if callable(getattr(transport, "get_write_buffer_size", None)) and isinstance(
        writable, asyncio.Event
    ):
        return Output(
            lambda: 0 if transport.is_closing() else transport.get_write_buffer_size(),
            lambda: not writable.is_set(),
        )
    return None


# A replay (a join's backlog, an SSE stream's) goes out while the socket
# holds at most REPLAY_LOW_WATER bytes not yet taken, checked every
# REPLAY_POLL_SECONDS: as fast as the client reads, not all at once into the
# server's memory. A socket that takes nothing for WS_REPLAY_STALL_SECONDS
# meanwhile has stopped reading.
REPLAY_LOW_WATER = 64 * 1024
REPLAY_POLL_SECONDS = 0.02


async def output_taken(pending: Callable[[], int], stopped: Callable[[], bool] = _never) -> bool:
    """Wait until `pending()` (an Output's, or a consumer's own count) is at
    most REPLAY_LOW_WATER. False if it did not go down for
    WS_REPLAY_STALL_SECONDS, or once `stopped()`."""
    stall = float(realtime_settings.WS_REPLAY_STALL_SECONDS)
    loop = asyncio.get_running_loop()
    now = loop.time()
    give_up, waiting = now + stall, pending()
    while waiting > REPLAY_LOW_WATER:
        if stopped() or now >= give_up:
            return False
        await asyncio.sleep(REPLAY_POLL_SECONDS)
        now, before, waiting = loop.time(), waiting, pending()
        if waiting < before:
            give_up = now + stall
    return not stopped()
