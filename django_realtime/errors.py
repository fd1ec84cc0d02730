"""
Provides ClientError, the one exception type that becomes an `error` frame on
the WebSocket and a DRF error response on REST, with the same code on both.
"""

from typing import ClassVar


class ClientError(Exception):
    """A request the server refuses; `code` is one of the contract's error codes."""

    code: ClassVar[str] = "BAD_REQUEST"
    status: ClassVar[int] = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(ClientError):
    code = "BAD_REQUEST"
    status = 400


class Forbidden(ClientError):
    code = "FORBIDDEN"
    status = 403


class NotFound(ClientError):
    code = "NOT_FOUND"
    status = 404


class TooLarge(ClientError):
    code = "TOO_LARGE"
    status = 400


class RateLimited(ClientError):
    code = "RATE_LIMITED"
    status = 429

    def __init__(self, message: str, retry_after_seconds: float = 1.0):
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class Unavailable(ClientError):
    code = "UNAVAILABLE"
    status = 503
