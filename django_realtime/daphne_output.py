"""
Provides the output path of the connections the package claims under daphne
(django_realtime.daphne_transport): a text framed once for every connection
it goes to, written straight to the socket when nothing waits before it, and
the bound on what Twisted holds unsent (4413).
"""

from typing import Any

from . import metrics
from .closecodes import CloseCode
from .conf import realtime_settings

# A connection whose socket stopped taking output is closed with 4413, and
# its TCP connection (with the output buffered for it) dropped after the
# grace unless it reads up to the close frame by then.
OVERFLOW_GRACE_SECONDS = 60.0


def eager_write(self: Any, data: bytes) -> None:
    """A claimed connection's Twisted TCP transport's write (bound to that
    transport alone): the socket itself first, when nothing is waiting in
    the transport's buffers; Twisted's own write for the rest."""
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
    type(self).write(self, data)


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
    """Bytes of a daphne connection's output that Twisted holds, not yet
    taken by the socket."""
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
    protocol._realtime_close_reason = CloseCode.OUTPUT_OVER_LIMIT.reason
    protocol.serverClose(code=int(CloseCode.OUTPUT_OVER_LIMIT))
    return True


_LIVE: dict = {}  # what over_output_cap reads of a live (not replayed) frame


def send_text_now(protocol: Any, text: str) -> bool:
    """A live text frame sent at once, as daphne's send would (through the
    claimed protocol's handle_reply) but without the ASGI message, the
    coroutine and daphne's own lookups: dropped if the connection is over
    its output cap (True), written in the plain case (True); False, nothing
    done, in any other case, for the ASGI send to handle."""
    if over_output_cap(protocol, _LIVE):
        return True
    return write_text(protocol, text)
