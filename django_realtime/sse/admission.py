"""
Provides what a stream view decides before it streams: the user, as REST
authenticates (`authenticate`), a place under SSE_MAX_STREAMS_PER_USER
(`take_stream_slot`, `open_streams`), and refusals in REST's error shape.
"""

import uuid
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse

from ..conf import realtime_settings
from ..limits import Slots
from ..tokens import token_user_async

# Open streams per user (SSE_MAX_STREAMS_PER_USER), across processes with Redis.
open_streams = Slots("sse")


def error_response(status: int, detail: str, code: str | None = None) -> JsonResponse:
    """The shape the REST API gives errors (django_realtime.rest.exception_handler)."""
    body = {"detail": detail} if code is None else {"detail": detail, "code": code}
    response = JsonResponse(body, status=status)
    if status == 401:
        response["WWW-Authenticate"] = "Token"
    return response


async def authenticate(request: HttpRequest) -> tuple[Any, HttpResponse | None]:
    """The user, as REST decides it: a Token header, else the session.
    Raises Unavailable when the database is away."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "token":
        user = await token_user_async(key.strip()) if key.strip() else None
        if user is None:
            return None, error_response(401, "Invalid token.")
        return user, None
    user = await request.auser()
    if not user.is_authenticated:
        return None, error_response(401, "Authentication credentials were not provided.")
    return user, None


async def take_stream_slot(user_id: int) -> tuple[str, HttpResponse | None]:
    """A slot for a new stream of the user (its name, for the stream to give
    back), or the 429 when the user has SSE_MAX_STREAMS_PER_USER open."""
    slot = uuid.uuid4().hex
    cap = realtime_settings.SSE_MAX_STREAMS_PER_USER
    if not await open_streams.take(user_id, slot, cap):
        response = error_response(429, f"at most {cap} open streams per user", "RATE_LIMITED")
        response["Retry-After"] = "10"
        return slot, response
    return slot, None
