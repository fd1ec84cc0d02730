"""
Provides the package's adjustments to daphne's WebSocket transport.

- The frame limit stays where daphne puts it (1 MiB), for autobahn applies
  it to frames in both directions: at 64 KiB, a `joined` frame listing a
  thousand present users could not be sent. The consumer closes a client
  frame over WS_MAX_FRAME_BYTES with 1009 itself, which the close codes
  below make possible.
- Close frames, not dropped sockets. autobahn fails a connection by dropping
  TCP unless told otherwise, which clients see as 1006 with no reason.
- Close reasons. daphne drops the `reason` of an ASGI `websocket.close`; it
  is sent with the close code here (4408 says "policy: too many requests").
- Sends racing a close. A frame for a peer that has just gone is dropped
  instead of raising into the consumer, whose disconnect() must still run.
- No formatting for debug lines that are not written. autobahn formats its
  debug lines' arguments whether they are logged or not: its whole protocol
  configuration with pprint on every connection (a tenth of the CPU of a
  connection's setup), and colour-highlighted names on every frame sent
  (about 7 % of the CPU of a broadcast). Here they are computed only if the
  line is written.
- Frames written at once. Twisted buffers every write until the reactor
  says the socket is writable, which under the asyncio reactor costs two
  epoll_ctl calls and a loop turn per frame (a sixth of the CPU of a
  broadcast). A write to a TCP connection with nothing queued goes to the
  socket at once here, as asyncio's own transports do; what the socket does
  not take, and everything behind it, is buffered by Twisted as before.
- Text frames framed once. A topic's round, or a room's message, sends the
  same text to many connections; autobahn would encode and frame it again
  for each (a third of the CPU per frame, py-spy). While a connection is in
  the plain case (open, no compression, masking, fragmenting, tracing or
  queued writes), the frame's bytes, built once for that text, are written
  to its transport with autobahn's traffic counters kept; any other case
  goes through autobahn as before.
- Bounded output. A frame for a connection whose Twisted buffer already holds
  more than WS_MAX_PENDING_OUTPUT_BYTES (a client that stopped reading) is
  dropped, the connection is closed with 4413, and its TCP connection is
  dropped OVERFLOW_GRACE_SECONDS later with the buffer. daphne's `send`
  never waits, so Twisted's buffer is where a stalled reader's output piles up.
- The registered server close codes. autobahn lets an application send only
  1000 and 3000-4999, yet a server must be able to say 1001 (going away),
  1009 (too big), 1011 (internal error), 1012 (service restart, what a drain
  sends so clients reconnect elsewhere) and 1013 (try again later).

Applied by django_realtime.servers.prepare() when chat.routing is imported,
which a site's asgi.py does before daphne's command line builds its Server,
so `daphne -b HOST -p PORT mysite.asgi:application` needs no extra flag.
Under another ASGI server these are no-ops.
"""

import functools
import sys
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from . import internals, metrics
from .conf import realtime_settings

SERVER_CLOSE_CODES = frozenset({1000, 1001, 1008, 1009, 1011, 1012, 1013})
# A connection whose socket stopped taking output: closed with this, and its
# TCP connection (with the output buffered for it) dropped after the grace
# unless it reads up to the close frame by then.
OVERFLOW_CLOSE_CODE = 4413
OVERFLOW_CLOSE_REASON = "policy: output over limit"
OVERFLOW_GRACE_SECONDS = 60.0


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


def eager_write(buffered_write: Callable[[Any, bytes], None]) -> Callable[[Any, bytes], None]:
    """A Twisted TCP connection's write that first tries the socket itself
    when nothing is waiting in the connection's buffers."""

    def write(self: Any, data: bytes) -> None:
        if (
            data
            and not self.TLS
            and self.connected
            and not self._writeDisconnected
            and not self._tempDataBuffer
            and len(self.dataBuffer) == self.offset
        ):
            try:
                sent = self.socket.send(data)
            except OSError:  # would block, or the peer went: Twisted finds out
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        buffered_write(self, data)

    return write


# What the adjustments below replace or read in daphne, autobahn and Twisted:
# (module, object path, attribute). If an upgrade renames one, the server
# refuses to start (missing_internals) rather than run half-patched.
INTERNALS = [
    ("twisted.internet.tcp", "Server", "write"),
    ("twisted.internet.tcp", "Server", "TLS"),
    ("twisted.internet.tcp", "Server", "connected"),
    ("twisted.internet.tcp", "Server", "_writeDisconnected"),
    ("twisted.internet.tcp", "Server", "dataBuffer"),
    ("twisted.internet.tcp", "Server", "offset"),
    ("twisted.internet.abstract", "FileDescriptor.__init__", "_tempDataBuffer"),
    ("twisted.internet.abstract", "FileDescriptor.__init__", "_tempDataLen"),
    ("autobahn.websocket.protocol", "", "pformat"),
    ("autobahn.websocket.protocol", "", "hltype"),
    ("autobahn.websocket.protocol", "", "hlval"),
    ("daphne.server", "", "WebSocketFactory"),
    ("daphne.server", "Server", "create_application"),  # adds the realtime.output extension
    ("daphne.server", "WebSocketFactory", "setProtocolOptions"),
    ("daphne.ws_protocol", "WebSocketProtocol", "handle_reply"),
    ("daphne.ws_protocol", "WebSocketProtocol", "serverClose"),
    ("daphne.ws_protocol", "WebSocketProtocol", "sendCloseFrame"),
    ("daphne.ws_protocol", "WebSocketProtocol", "sendClose"),
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

# The last text framed, its frame and its payload's length: a round sends one
# text (the same object) to every subscriber, one after the other.
_framed: list[Any] = [None, b"", 0]


def text_frame(text: str) -> tuple[bytes, int]:
    """The unmasked, unfragmented WebSocket frame of `text`, and its payload's
    length (built once for consecutive sends of the same string)."""
    if text is _framed[0]:
        return _framed[1], _framed[2]
    payload = text.encode("utf-8")
    size = len(payload)
    if size <= 125:
        header = bytes((0x81, size))
    elif size <= 0xFFFF:
        header = bytes((0x81, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + size.to_bytes(8, "big")
    frame = header + payload
    _framed[:] = [text, frame, size]
    return frame, size


def write_text(protocol: Any, text: str) -> bool:
    """Write `text` as one frame straight to the connection's transport, as
    autobahn's sendMessage would in the plain case; False (nothing written)
    in any other, for autobahn to handle."""
    if (
        protocol.state != protocol.STATE_OPEN
        or protocol._perMessageCompress is not None
        or protocol.send_queue
        or protocol.trackedTimings
        or protocol.logFrames
        or protocol.maskServerFrames
        or protocol.transport is None
    ):
        return False
    frame, size = text_frame(text)
    if 0 < protocol.maxMessagePayloadSize < size or 0 < protocol.autoFragmentSize < size:
        return False
    stats = protocol.trafficStats
    stats.outgoingWebSocketMessages += 1
    stats.outgoingWebSocketFrames += 1
    stats.outgoingOctetsAppLevel += size
    stats.outgoingOctetsWebSocketLevel += size
    stats.outgoingOctetsWireLevel += len(frame)
    protocol.transport.write(frame)
    return True


def pending_output(protocol: Any) -> int:
    """Bytes of a daphne WebSocket's output that Twisted holds, not yet taken
    by the socket."""
    transport = protocol.transport
    if transport is None:
        return 0
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


def over_output_cap(protocol: Any, message: dict) -> bool:
    """Whether Twisted holds more of this connection's output than
    WS_MAX_PENDING_OUTPUT_BYTES, beyond the replays it was sent: then
    close it with 4413 once, dropping what comes after.

    A replay (a join's backlog, a catch-up: frames the consumer marks
    `realtime.replay`) is written at once, far faster than any socket
    takes it, so it never trips the cap, and what it adds is allowed on
    top of the cap until the buffer is back under it."""
    if getattr(protocol, "_realtime_overflowed", False):
        return True
    cap = realtime_settings.WS_MAX_PENDING_OUTPUT_BYTES
    transport = protocol.transport
    if not cap or transport is None:
        return False
    pending = pending_output(protocol)
    if pending <= cap:
        protocol._realtime_allowance = 0
    if message.get("realtime.replay"):
        text = message.get("text") or ""
        size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
        size += len(message.get("bytes") or b"")
        protocol._realtime_allowance = getattr(protocol, "_realtime_allowance", 0) + size
        return False
    if pending <= cap + getattr(protocol, "_realtime_allowance", 0):
        return False
    protocol._realtime_overflowed = True
    metrics.OUTPUT_OVERFLOWS.inc()
    # The close frame waits behind the buffered output: give the peer the
    # grace to read that far (autobahn's own wait is a second) before the
    # connection, and what is buffered for it, is dropped. Nothing is
    # added meanwhile, so it holds at most about the cap.
    protocol.closeHandshakeTimeout = OVERFLOW_GRACE_SECONDS
    protocol._realtime_close_reason = OVERFLOW_CLOSE_REASON
    protocol.serverClose(code=OVERFLOW_CLOSE_CODE)
    return True


_LIVE: dict = {}  # what over_output_cap reads of a live (not replayed) frame


def send_text_now(protocol: Any, text: str) -> bool:
    """A live text frame sent at once, as daphne's send would (through
    handle_reply below) but without the ASGI message, the coroutine and
    daphne's own lookups: dropped if the connection is over its output cap
    (True), written in the plain case (True); False, nothing done, in any
    other case, for the ASGI send to handle."""
    if over_output_cap(protocol, _LIVE):
        return True
    return write_text(protocol, text)


def missing_internals() -> list[str]:
    """The names of INTERNALS that the installed versions do not have."""
    return internals.missing(INTERNALS)


def tune_daphne() -> None:
    if "daphne.server" not in sys.modules:
        # Not under daphne (uvicorn, tests): importing daphne.server would
        # install a Twisted reactor for nothing. The consumer's checks apply.
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
    from daphne.ws_protocol import WebSocketProtocol
    from twisted.internet import tcp

    if getattr(WebSocketProtocol, "_realtime_tuned", False):
        return
    WebSocketProtocol._realtime_tuned = True

    class WebSocketFactory(daphne_server.WebSocketFactory):
        def __init__(self, daphne, *args, **kwargs):
            super().__init__(daphne, *args, **kwargs)
            self.setProtocolOptions(failByDrop=False)

    original_server_close = WebSocketProtocol.serverClose
    original_handle_reply = WebSocketProtocol.handle_reply

    def handle_reply(self, message):
        # daphne drops the ASGI close `reason`; keep it for serverClose.
        kind = message.get("type")
        if kind == "websocket.close":
            self._realtime_close_reason = message.get("reason") or None
            if message.get("code") == OVERFLOW_CLOSE_CODE:
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
            return original_handle_reply(self, message)
        except Disconnected:
            # A frame for a peer that has just gone (a broadcast racing the
            # close). Raising would kill the consumer before its disconnect()
            # runs and leave its groups and presence behind; daphne delivers
            # websocket.disconnect to it next.
            return None

    def serverClose(self, code=None):
        reason = getattr(self, "_realtime_close_reason", None)
        if reason is not None:
            reason = reason.encode("utf-8")[:123].decode("utf-8", "ignore")  # RFC 6455 limit
        if code in SERVER_CLOSE_CODES and code != 1000:
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8") if reason else None)
        elif reason and code is not None:
            self.sendClose(code=code, reason=reason)
        else:
            original_server_close(self, code=code)

    original_create_application = daphne_server.Server.create_application

    def create_application(self, protocol, scope):
        # An ASGI extension telling the application how much of this
        # connection's output Twisted holds (django_realtime.servers.output_of):
        # the SSE streams' bound, and the topics' conflation; and a way to
        # send a live text frame at once (HeldOutput.send_now).
        extensions = scope.setdefault("extensions", {})
        extensions[OUTPUT_EXTENSION] = {
            "pending": functools.partial(pending_output, protocol),
            "send_text": functools.partial(send_text_now, protocol),
        }
        return original_create_application(self, protocol, scope)

    daphne_server.Server.create_application = create_application
    tcp.Server.write = eager_write(tcp.Server.write)  # type: ignore[method-assign]
    for name in ("pformat", "hltype", "hlval"):
        setattr(autobahn_protocol, name, lazily(getattr(autobahn_protocol, name)))
    daphne_server.WebSocketFactory = WebSocketFactory
    WebSocketProtocol.handle_reply = handle_reply
    WebSocketProtocol.serverClose = serverClose
