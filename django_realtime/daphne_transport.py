"""
Provides the package's adjustments to daphne's WebSocket transport, for the
connections its application claims through the `realtime.output` ASGI
extension and never a site's own consumers or HTTP: close frames with their
reasons and the server's close codes, sends racing a close dropped, output
bounded (4413), frames written at once and text framed once (those three
in django_realtime.daphne_output). Why each: docs/architecture.md,
"daphne_transport". Applied by servers.prepare() when
chat.routing is imported; a no-op under another server.
"""

import functools
import sys
from collections.abc import Callable
from pprint import pformat
from types import MethodType
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from . import internals
from .closecodes import CloseCode
from .daphne_output import (
    OVERFLOW_GRACE_SECONDS,
    eager_write,
    over_output_cap,
    pending_output,
    send_text_now,
    write_text,
)

SERVER_CLOSE_CODES = frozenset({1000, 1001, 1008, 1009, 1011, 1012, 1013})


class Lazy:
    """fn(*args), computed only when formatted into a log line."""

    __slots__ = ("fn", "args")

    def __init__(self, fn: Callable[..., Any], *args: Any):
        self.fn, self.args = fn, args

    def __format__(self, spec: str) -> str:
        return format(self.fn(*self.args), spec)

    def __str__(self) -> str:
        return str(self.fn(*self.args))


def lazily(fn: Callable[..., Any]) -> Callable[..., Lazy]:
    def deferred(*args: Any) -> Lazy:
        return Lazy(fn, *args)

    return deferred


def lazy_pformat(obj: Any) -> Any:
    """autobahn's pformat: deferred for the list of options it logs when a
    connection is made; a str at once for anything else (Timings.__str__
    returns its pformat of a dict, which must be a str)."""
    if type(obj) is list:
        return Lazy(pformat, obj)
    return pformat(obj)


# What the adjustments below replace or read in daphne, autobahn and Twisted:
# (module, object path, attribute). If an upgrade renames one, the server
# refuses to start (missing_internals) rather than run half-adjusted.
INTERNALS = [
    # eager_write: a claimed transport's state, and Twisted's own write behind it.
    ("twisted.internet.tcp", "Server", "write"),
    ("twisted.internet.tcp", "Server", "TLS"),
    ("twisted.internet.tcp", "Server", "connected"),
    ("twisted.internet.tcp", "Server", "_writeDisconnected"),
    ("twisted.internet.tcp", "Server", "dataBuffer"),
    ("twisted.internet.tcp", "Server", "offset"),
    ("twisted.internet.tcp", "Connection.__init__", "socket"),
    ("twisted.internet.abstract", "FileDescriptor.__init__", "_tempDataBuffer"),
    ("twisted.internet.abstract", "FileDescriptor.__init__", "_tempDataLen"),
    # The lazy log arguments (module globals of autobahn's protocol module).
    ("autobahn.websocket.protocol", "", "pformat"),
    ("autobahn.websocket.protocol", "", "hltype"),
    ("autobahn.websocket.protocol", "", "hlval"),
    # The realtime.output extension, and how claim() tells daphne's own send:
    # create_application passes `partial(self.handle_reply, protocol)`.
    ("daphne.server", "Server", "create_application"),
    ("daphne.server", "Server", "handle_reply"),
    ("daphne.server", "Server.create_application", "handle_reply"),
    # A claimed protocol's own handle_reply and serverClose wrap daphne's.
    ("daphne.ws_protocol", "WebSocketProtocol", "handle_reply"),
    ("daphne.ws_protocol", "WebSocketProtocol", "serverClose"),
    ("daphne.ws_protocol", "WebSocketProtocol", "sendCloseFrame"),
    ("daphne.ws_protocol", "WebSocketProtocol", "sendClose"),
    # autobahn's per-connection copy of its factory's options.
    ("autobahn.websocket.protocol", "WebSocketProtocol._connectionMade", "CONFIG_ATTRS"),
    ("autobahn.websocket.protocol", "WebSocketServerProtocol", "CONFIG_ATTRS"),
    ("autobahn.websocket.protocol", "WebSocketServerFactory.resetProtocolOptions", "failByDrop"),
    (
        "autobahn.websocket.protocol",
        "WebSocketServerFactory.resetProtocolOptions",
        "closeHandshakeTimeout",
    ),
    # write_text(): what autobahn's sendMessage/sendFrame/sendData check and count.
    ("autobahn.websocket.protocol", "WebSocketProtocol", "STATE_OPEN"),
    ("autobahn.websocket.protocol", "WebSocketProtocol._connectionMade", "_perMessageCompress"),
    ("autobahn.websocket.protocol", "WebSocketProtocol._connectionMade", "send_queue"),
    ("autobahn.websocket.protocol", "WebSocketProtocol._connectionMade", "trafficStats"),
    ("autobahn.websocket.protocol", "WebSocketProtocol.setTrackTimings", "trackedTimings"),
    ("autobahn.websocket.protocol", "WebSocketServerFactory.__init__", "logFrames"),
    (
        "autobahn.websocket.protocol",
        "WebSocketServerFactory.resetProtocolOptions",
        "maskServerFrames",
    ),
    (
        "autobahn.websocket.protocol",
        "WebSocketServerFactory.resetProtocolOptions",
        "autoFragmentSize",
    ),
    (
        "autobahn.websocket.protocol",
        "WebSocketServerFactory.resetProtocolOptions",
        "maxMessagePayloadSize",
    ),
    ("autobahn.websocket.protocol", "TrafficStats.reset", "outgoingWebSocketMessages"),
    ("autobahn.websocket.protocol", "TrafficStats.reset", "outgoingWebSocketFrames"),
    ("autobahn.websocket.protocol", "TrafficStats.reset", "outgoingOctetsAppLevel"),
    ("autobahn.websocket.protocol", "TrafficStats.reset", "outgoingOctetsWebSocketLevel"),
    ("autobahn.websocket.protocol", "TrafficStats.reset", "outgoingOctetsWireLevel"),
]


OUTPUT_EXTENSION = "realtime.output"

# --- a claimed connection's own methods (bound to its objects by claim()) ---------


class _NotTuned(Exception):
    """Stands for autobahn's Disconnected until tune_daphne() imports it."""


_Disconnected: type[Exception] = _NotTuned


def handle_reply(self: Any, message: dict) -> None:
    """daphne's handle_reply, with the output bound, the text-frame fast
    path, the close reason kept for serverClose, and sends racing a close
    dropped."""
    kind = message.get("type")
    if kind == "websocket.close":
        self._realtime_close_reason = message.get("reason") or None
        if message.get("code") == CloseCode.OUTPUT_OVER_LIMIT:
            # The consumer's own 4413 (a stalled replay, a topic queue
            # full): the close frame waits behind the output too.
            self.closeHandshakeTimeout = OVERFLOW_GRACE_SECONDS
    elif kind == "websocket.send":
        if over_output_cap(self, message):
            return None  # closed for it (4413): the frame is dropped
        text = message.get("text")
        if text and not message.get("bytes") and write_text(self, text):
            return None
    try:
        return type(self).handle_reply(self, message)
    except _Disconnected:
        # A frame for a peer that has just gone (a broadcast racing the
        # close). Raising would kill the consumer before its disconnect()
        # runs and leave its groups and presence behind; daphne delivers
        # websocket.disconnect to it next.
        return None


def server_close(self: Any, code: int | None = None) -> None:
    """daphne's serverClose, with the close reason and the registered server
    close codes."""
    reason = getattr(self, "_realtime_close_reason", None)
    if reason is not None:
        reason = reason.encode("utf-8")[:123].decode("utf-8", "ignore")  # RFC 6455 limit
    if code is not None:
        code = int(code)  # a CloseCode: autobahn takes a plain int only
    if code in SERVER_CLOSE_CODES and code != 1000:
        self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8") if reason else None)
    elif reason and code is not None:
        self.sendClose(code=code, reason=reason)
    else:
        type(self).serverClose(self, code=code)


# Set by tune_daphne(): daphne's Server.handle_reply (to tell its own send)
# and Twisted's TCP server transport class (the only one written eagerly).
_daphne: dict[str, Any] = {}


def is_server_send(protocol: Any, send: Any) -> bool:
    """Whether `send` is daphne's own for `protocol`:
    `partial(server.handle_reply, protocol)` (daphne.server.Server.create_application)."""
    return (
        isinstance(send, functools.partial)
        and getattr(send.func, "__func__", None) is _daphne.get("handle_reply")
        and len(send.args) == 1
        and send.args[0] is protocol
        and not send.keywords
    )


def claim(protocol: Any, send: Any = None) -> Callable[[str], bool] | None:
    """Claim a daphne WebSocket connection for the package (idempotent; the
    first claim, by the package's outermost application, decides): the
    adjustments above apply to it from now on. Returns `send_text` (a live
    text frame straight to the transport: send_text_now) if `send` is
    daphne's own send for it, else None: then every frame goes through the
    ASGI send the package was given, and any middleware of the site in it."""
    if getattr(protocol, "_realtime_claimed", False):
        return protocol._realtime_send_text
    protocol._realtime_claimed = True
    protocol.failByDrop = False  # autobahn copied its factory's on connect
    protocol.handle_reply = MethodType(handle_reply, protocol)
    protocol.serverClose = MethodType(server_close, protocol)
    transport = protocol.transport
    if transport is not None and type(transport) is _daphne.get("tcp_server"):
        transport.write = MethodType(eager_write, transport)
    direct = is_server_send(protocol, send)
    protocol._realtime_send_text = functools.partial(send_text_now, protocol) if direct else None
    return protocol._realtime_send_text


def missing_internals() -> list[str]:
    """The names of INTERNALS that the installed versions do not have."""
    return internals.missing(INTERNALS)


def tune_daphne() -> None:
    """Offer the realtime.output extension on daphne's connections (and
    autobahn's lazy log arguments); idempotent."""
    if "daphne.server" not in sys.modules:
        # Not under daphne (uvicorn, tests): importing daphne.server would
        # install a Twisted reactor for nothing. The consumer's checks apply.
        return
    if _daphne:
        return
    missing = missing_internals()
    if missing:
        raise ImproperlyConfigured(
            "django-realtime adjusts daphne's transport, and the installed daphne, "
            f"autobahn or Twisted no longer has: {', '.join(missing)}. Pin the versions "
            "in requirements.txt or update django_realtime/daphne_transport.py."
        )
    from autobahn.exception import Disconnected
    from autobahn.websocket import protocol as autobahn_protocol
    from daphne import server as daphne_server
    from twisted.internet import tcp

    global _Disconnected
    _Disconnected = Disconnected
    _daphne["handle_reply"] = daphne_server.Server.handle_reply
    _daphne["tcp_server"] = tcp.Server

    original_create_application = daphne_server.Server.create_application

    def create_application(self, protocol, scope):
        # An ASGI extension telling the application how much of this
        # connection's output Twisted holds (django_realtime.servers.output_of):
        # the SSE streams' bound, and the topics' conflation; and, on a
        # WebSocket, the claim() that applies this module's adjustments.
        extension: dict[str, Any] = {"pending": functools.partial(pending_output, protocol)}
        if scope.get("type") == "websocket":
            extension["claim"] = functools.partial(claim, protocol)
        scope.setdefault("extensions", {})[OUTPUT_EXTENSION] = extension
        return original_create_application(self, protocol, scope)

    daphne_server.Server.create_application = create_application
    autobahn_protocol.pformat = lazy_pformat  # type: ignore[assignment]
    for name in ("hltype", "hlval"):
        setattr(autobahn_protocol, name, lazily(getattr(autobahn_protocol, name)))
