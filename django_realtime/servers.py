"""
Provides prepare(): what the package needs from the ASGI server it runs
under, applied once at start-up (when chat.routing is imported).

- daphne: the transport adjustments of django_realtime.daphne_transport and
  the 1012 drain on SIGTERM (django_realtime.drain).
- uvicorn: nothing to change. On SIGTERM it closes every WebSocket with
  1012 itself, before it waits for the connections to end and sends the
  lifespan shutdown event (so a drain there would find no socket left);
  `--timeout-graceful-shutdown` bounds its wait for open SSE streams.
- any: the garbage collector paced (django_realtime.collector), unless
  GC_FULL_COLLECTION_SECONDS is 0.
- other servers: nothing else is changed; `await drain.drain()` is theirs to call
  before their shutdown closes the sockets, if it does not send 1012.
"""

import asyncio
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from . import collector, drain, internals
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
    if realtime_settings.GC_FULL_COLLECTION_SECONDS:
        collector.install(realtime_settings.GC_FULL_COLLECTION_SECONDS)
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
    # (False): daphne's, through its transport (daphne_transport).
    send_text: Callable[[str], bool] | None = None


def _never() -> bool:
    return False


def server_send(send: Any) -> Any:
    """The server's own `send` under the wrappers around it: Channels'
    SessionMiddleware and chat.routing's watch keep it as `real_send`.
    Neither does anything with a `websocket.send` (SessionMiddleware saves
    the session on `http.response.start` only), so a frame may skip them:
    a tenth of the CPU of a busy topic's hand-out."""
    for _ in range(5):
        wrapped = getattr(getattr(send, "__self__", None), "real_send", None)
        if wrapped is None:
            break
        send = wrapped
    return send


def output_of(send: Any, scope: dict | None = None) -> Output | None:
    """The Output of a connection, from its ASGI scope and `send`; None under
    a server it cannot tell for (then output is never held back, only capped
    by the server)."""
    extension = ((scope or {}).get("extensions") or {}).get(OUTPUT_EXTENSION)
    if isinstance(extension, dict) and callable(extension.get("pending")):
        send_text = extension.get("send_text")
        return Output(
            extension["pending"], _never, send_text if callable(send_text) else None
        )  # daphne (daphne_transport)
    send = server_send(send)
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
