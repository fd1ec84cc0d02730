"""
Provides the WebSocket's client frames: parsing, the fields every handler
reads, and the `error` frame. Nothing here does I/O.
"""

import json
from typing import Any

from django_realtime.errors import BadRequest, ClientError
from django_realtime.strictjson import check_text

MAX_SEQ = 2**63 - 1
MAX_REF_CHARS = 128
MAX_CLIENT_ID_CHARS = 64


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse(text: str) -> dict[str, Any]:
    """A client frame as a dict, or BadRequest saying what is wrong with it."""
    try:
        frame = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise BadRequest("frame is not valid JSON") from None
    if not isinstance(frame, dict):
        raise BadRequest("frame must be a JSON object")
    check_text(frame)  # no NUL, no lone surrogate in any string: it could not be echoed
    if not isinstance(frame.get("type"), str):
        raise BadRequest("frame needs a string 'type'")
    return frame


def encoded_size_over(text: str, limit: int) -> bool:
    """Whether `text` is over `limit` bytes in UTF-8 (encoded only when it may be)."""
    return len(text) * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit


def ref(frame: dict[str, Any]) -> Any:
    """The frame's `ref`, echoed on every reply: a short string or an integer.
    Raises BadRequest (whose reply then carries no ref) for anything else."""
    value = frame.get("ref")
    if value is None or (isinstance(value, str) and len(value) <= MAX_REF_CHARS):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_SEQ:
        return value
    raise BadRequest(f"'ref' must be a string of at most {MAX_REF_CHARS} characters or an integer")


def slug(frame: dict[str, Any], name: str = "room") -> str:
    value = frame.get(name)
    if not isinstance(value, str) or not value or len(value) > 64:
        raise BadRequest(f"'{name}' must be a room slug")
    return value


def seq(frame: dict[str, Any], name: str, *, required: bool) -> int | None:
    value = frame.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEQ:
        raise BadRequest(f"'{name}' must be a non-negative integer")
    return value


def required(frame: dict[str, Any], name: str, why: str = "") -> Any:
    if name not in frame:
        raise BadRequest(f"'{name}' is required{f' ({why})' if why else ''}")
    return frame[name]


def with_ref(payload: dict[str, Any], ref: Any) -> dict[str, Any]:
    return payload if ref is None else {**payload, "ref": ref}


def error(exc: ClientError, ref: Any, frame: dict[str, Any] | None) -> dict[str, Any]:
    """The `error` frame for a refused frame."""
    reply: dict[str, Any] = {"type": "error", "code": exc.code, "message": exc.message}
    retry_after = getattr(exc, "retry_after_seconds", None)
    if retry_after is not None:
        reply["retry_after"] = round(retry_after, 1)
    if frame is not None and frame.get("type") == "message":
        # A client matches a refused send to its outbox entry by this.
        client_id = frame.get("client_id")
        if isinstance(client_id, str) and len(client_id) <= MAX_CLIENT_ID_CHARS:
            reply["client_id"] = client_id
    return with_ref(reply, ref)


INTERNAL_ERROR = {"type": "error", "code": "UNAVAILABLE", "message": "internal error; retry"}
