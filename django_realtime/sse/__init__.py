"""
Provides Server-Sent Events as async Django views: the wire format
(sse.wire), who may open a stream (sse.admission), and `pump()`, which runs
one `Stream` until its client goes (sse.streams).
"""

from .admission import authenticate, error_response, open_streams, take_stream_slot
from .streams import (
    EPOCH_POLL_SECONDS,
    Stream,
    event_stream_response,
    over_output_cap,
    pump,
    release_request_thread,
)
from .wire import KEEPALIVE, MAX_EVENT_ID_DIGITS, RETRY_MS, last_event_id, sse_event, stream_head

__all__ = [
    "EPOCH_POLL_SECONDS",
    "KEEPALIVE",
    "MAX_EVENT_ID_DIGITS",
    "RETRY_MS",
    "Stream",
    "authenticate",
    "error_response",
    "event_stream_response",
    "last_event_id",
    "open_streams",
    "over_output_cap",
    "pump",
    "release_request_thread",
    "sse_event",
    "stream_head",
    "take_stream_slot",
]
