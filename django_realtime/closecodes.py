"""
Provides CloseCode: every WebSocket close code the package sends, with its
reason, as http.HTTPStatus does for HTTP (docs/protocol.md, "Close codes").

Members are ints; autobahn (under daphne) takes only a plain int, so the
package's sends pass `int(code)` where a code reaches it.
"""

import enum


class CloseCode(enum.IntEnum):
    """A close code and the reason sent with it ("" where none is sent or it varies)."""

    reason: str

    def __new__(cls, value: int, reason: str = "") -> "CloseCode":
        member = int.__new__(cls, value)
        member._value_ = value
        member.reason = reason
        return member

    # RFC 6455 codes.
    NORMAL = 1000, ""  # the client's own close, echoed
    UNSUPPORTED_DATA = 1003, ""  # never sent under daphne, which cannot: 4400 instead
    INVALID_DATA = 1007, ""  # a text frame that is not UTF-8 (the WebSocket layer)
    TOO_LARGE = 1009, ""  # a frame or update over its limit
    INTERNAL_ERROR = 1011, ""  # an unhandled error (Channels and the server)
    SERVICE_RESTART = 1012, ""  # a drain on SIGTERM: reconnect elsewhere
    TRY_AGAIN = 1013, "try again later"  # the connection could not be set up
    # The package's own codes (4000-4999), after the HTTP status they echo.
    BAD_MESSAGE = 4400, ""  # a document socket's malformed or foreign message
    UNAUTHENTICATED = 4401, "authentication required"  # or "session ended"
    NOT_FOUND = 4404, "no such document"
    FLOODING = 4408, "policy: too many requests"  # past WS_FLOOD_CLOSE_RATE refusals
    DOCUMENT_FULL = 4409, "document too large"
    OUTPUT_OVER_LIMIT = 4413, "policy: output over limit"  # a reader that stopped reading
    TOO_MANY = 4429, ""  # "policy: at most N connections", and the document quotas


# Reasons shared by more than one sender.
SESSION_ENDED = "session ended"  # 4401 once a session or token ends
SESSION_MOVED = "session changed: reconnect"  # 1012: the reconnect's handshake decides
