"""
Provides WebSocket authentication for /ws/: the origin check (Django's CSRF
rule on whole origins, else HTTP 403), then a token header, a single-use
ticket or the session cookie (only with an allowed Origin, read through
Django's own get_user on a copy nothing writes); no valid credentials: the
consumer closes with 4401. The rules: docs/architecture.md, "chat.auth".
"""

import io
import re
import secrets
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from channels.security.websocket import WebsocketDenier
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from django.utils import timezone
from django.utils.http import is_same_domain

from django_realtime.asyncdb import db
from django_realtime.conf import realtime_settings
from django_realtime.credentials import Credential, session_user
from django_realtime.tokens import token_user_async

from .models import WsTicket

# The http(s) scheme of a page whose socket is ws(s), as the Origin spells it.
_HTTP_SCHEME = {"ws": "http", "wss": "https", "http": "http", "https": "https"}


def origin_allowed(origin: str, scope: dict) -> bool:
    """Whether Django's CSRF check would accept `origin` for a request made
    as this handshake was (CsrfViewMiddleware._origin_verified), or it is
    listed in WS_ALLOWED_ORIGINS. 'null' never is."""
    if origin in realtime_settings.WS_ALLOWED_ORIGINS:
        return True
    request = handshake_request(scope)
    try:
        if origin == f"{request.scheme}://{request.get_host()}":
            return True
    except DisallowedHost:  # a Host not in ALLOWED_HOSTS: only a trusted origin will do
        pass
    trusted = settings.CSRF_TRUSTED_ORIGINS
    if "*" not in origin and origin in trusted:
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return any(
        is_same_domain(parts.netloc, urlsplit(pattern).netloc.lstrip("*"))
        for pattern in trusted
        if "*" in pattern and urlsplit(pattern).scheme == parts.scheme
    )


def handshake_request(scope: dict) -> ASGIRequest:
    """The handshake as a Django request (GET, the page's http or https
    scheme), for Django's own reading of its Host and scheme."""
    scheme = _HTTP_SCHEME.get(scope.get("scheme", "ws"), "http")
    return ASGIRequest(dict(scope, method="GET", scheme=scheme), io.BytesIO())


def ticket_issue(*, user: Any, credential: Credential | None = None) -> str:
    """A fresh single-use ticket for `user`, asked for with `credential` (the
    connection it opens ends with it); expired ones are swept on the way."""
    WsTicket.objects.filter(created_at__lt=_ticket_cutoff()).delete()
    key = secrets.token_urlsafe(32)
    WsTicket.objects.create(
        key=key,
        user=user,
        credential_kind=credential.kind if credential else "",
        credential_key=credential.key if credential else "",
    )
    return key


def ticket_redeem(key: str) -> tuple[Any, Credential | None] | None:
    """The ticket's user and the credential it was asked for with, once: the
    row is deleted by the first redeemer."""
    if not _KEY_RE.fullmatch(key):
        return None  # never a ticket; a NUL in it would fail in the database
    ticket = (
        WsTicket.objects.filter(key=key, created_at__gte=_ticket_cutoff())
        .select_related("user")
        .first()
    )
    if ticket is None:
        return None
    deleted, _ = WsTicket.objects.filter(pk=ticket.pk).delete()
    if deleted != 1 or not ticket.user.is_active:
        return None
    credential = (
        Credential(ticket.credential_kind, ticket.credential_key)
        if ticket.credential_kind
        else None
    )
    return ticket.user, credential


# Tickets are token_urlsafe(32); DRF tokens are 40 hex digits.
_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")


def _ticket_cutoff():
    return timezone.now() - timedelta(seconds=realtime_settings.WS_TICKET_TTL_SECONDS)


class WebSocketAuthMiddleware:
    """Origin check and authentication; sets scope['user']."""

    def __init__(self, inner: Any):
        self.inner = inner

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        headers = dict(scope.get("headers", []))
        origin = headers.get(b"origin")
        if origin is not None and not origin_allowed(origin.decode("latin-1"), scope):
            return await WebsocketDenier.as_asgi()(scope, receive, send)

        user: Any = AnonymousUser()
        # What the connection was opened with, so that it ends with it (§2).
        credential: Credential | None = None
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        ticket = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("ticket")
        if authorization:
            scheme, _, key = authorization.partition(" ")
            if scheme.lower() == "token" and key.strip():
                user = await token_user_async(key.strip()) or user
                credential = Credential("token", key.strip())
        elif ticket:
            redeemed = await db(ticket_redeem, key=ticket[0][:128])
            if redeemed is not None:
                user, credential = redeemed
        elif origin is not None:
            session_key = getattr(scope.get("session"), "session_key", None)
            if session_key:
                user = await db(session_user, session_key=session_key) or user
                credential = Credential("session", session_key)
        scope = dict(scope, user=user, realtime_credential=credential)
        return await self.inner(scope, receive, send)


def websocket_auth_stack(inner: Any) -> Any:
    """Cookies and session for the session path, then WebSocketAuthMiddleware."""
    return CookieMiddleware(SessionMiddleware(WebSocketAuthMiddleware(inner)))
