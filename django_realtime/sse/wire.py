"""
Provides the Server-Sent Events wire format: an event, a stream's first
chunk (the retry hint and its position), the keep-alive, and the client's
Last-Event-ID as a number.
"""

import json
from typing import Any

from django.http import HttpRequest

KEEPALIVE = b": keep-alive\n\n"
# The reconnection delay suggested to EventSource: long enough that a restart
# does not bring every client back within the same second.
RETRY_MS = 3000
MAX_EVENT_ID_DIGITS = 18  # below 2**63: anything longer is forged


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
