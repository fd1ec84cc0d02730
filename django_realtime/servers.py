"""
Provides prepare(): what the package needs from the ASGI server it runs
under, applied once at start-up (when chat.routing is imported).

- daphne: the transport adjustments of django_realtime.daphne_transport and
  the 1012 drain on SIGTERM (django_realtime.drain).
- uvicorn: nothing to change. On SIGTERM it closes every WebSocket with
  1012 itself, before it waits for the connections to end and sends the
  lifespan shutdown event (so a drain there would find no socket left);
  `--timeout-graceful-shutdown` bounds its wait for open SSE streams.
- other servers: nothing is changed; `await drain.drain()` is theirs to call
  before their shutdown closes the sockets, if it does not send 1012.
"""

import functools
import sys
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from . import drain, internals
from .daphne_transport import pending_output as daphne_pending_output
from .daphne_transport import tune_daphne

# What output_probe reads under uvicorn: its WebSocket protocols' `send` is
# the ASGI send, a bound method whose object holds the asyncio transport
# (whose get_write_buffer_size() is public asyncio API).
UVICORN_INTERNALS: list[internals.Name] = [
    ("uvicorn.protocols.websockets.websockets_sansio_impl", "WebSocketsSansIOProtocol", "send"),
    (
        "uvicorn.protocols.websockets.websockets_sansio_impl",
        "WebSocketsSansIOProtocol.__init__",
        "transport",
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


def output_probe(send: Any) -> Callable[[], int] | None:
    """For a WebSocket's ASGI `send`, a function telling how many bytes of
    its output the socket has not taken yet; None under a server it cannot
    tell for (then output is never held back, only capped by the server)."""
    for _ in range(5):  # Channels' SessionMiddleware wraps the server's send
        wrapped = getattr(getattr(send, "__self__", None), "real_send", None)
        if wrapped is None:
            break
        send = wrapped
    if isinstance(send, functools.partial) and send.args and "daphne.server" in sys.modules:
        protocol = send.args[0]  # daphne: partial(Server.handle_reply, protocol)
        if hasattr(protocol, "transport"):
            return functools.partial(daphne_pending_output, protocol)
    owner = getattr(send, "__self__", None)  # uvicorn: the protocol's bound `send`
    transport: Any = getattr(owner, "transport", None)
    if callable(getattr(transport, "get_write_buffer_size", None)):
        return lambda: 0 if transport.is_closing() else transport.get_write_buffer_size()
    return None
