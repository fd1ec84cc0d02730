"""
Provides WebSocket authentication for /ws/: the origin check, then one of a
token header, a single-use ticket or the session cookie.

- A foreign Origin is refused at the handshake (HTTP 403): cross-site
  WebSocket hijacking.
- `Authorization: Token <key>` or `?ticket=…` authenticate any client.
- The session cookie counts only when an allowed Origin is present, so a
  cookie alone never authenticates a handshake without one.
- No valid credentials: the consumer accepts and closes with 4401.
"""

import re
import secrets
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from channels.auth import get_user
from channels.security.websocket import WebsocketDenier
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone
from django.utils.http import is_same_domain

from django_realtime.asyncdb import db
from django_realtime.conf import realtime_settings
from django_realtime.credentials import Credential
from django_realtime.tokens import token_user_async

from .models import WsTicket

# What Django accepts as a Host when DEBUG is on and ALLOWED_HOSTS is empty.
DEBUG_ALLOWED_HOSTS = [".localhost", "127.0.0.1", "[::1]"]


def origin_allowed(origin: str) -> bool:
    """True for an origin whose host is in ALLOWED_HOSTS (exact, or a leading-dot
    subdomain pattern) or listed in WS_ALLOWED_ORIGINS. 'null' never is."""
    if origin in realtime_settings.WS_ALLOWED_ORIGINS:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return False
    # An origin is scheme://host[:port] and nothing else: no user info (the
    # host a parser finds after an '@' is not the one a browser means), path,
    # query, fragment or malformed port.
    if "@" in parts.netloc or parts.path or parts.query or parts.fragment:
        return False
    try:
        if parts.port == 0:
            return False
    except ValueError:  # not a number, or out of range
        return False
    host = parts.hostname
    if ":" in host:  # IPv6 literal, as ALLOWED_HOSTS spells it
        host = f"[{host}]"
    allowed = settings.ALLOWED_HOSTS
    if not allowed and settings.DEBUG:
        allowed = DEBUG_ALLOWED_HOSTS  # as Django's own host check does
    return "*" in allowed or any(is_same_domain(host, pattern) for pattern in allowed)


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
        if origin is not None and not origin_allowed(origin.decode("latin-1")):
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
            user = await get_user(scope)
            session_key = getattr(scope.get("session"), "session_key", None)
            credential = Credential("session", session_key) if session_key else None
        scope = dict(scope, user=user, realtime_credential=credential)
        return await self.inner(scope, receive, send)


def websocket_auth_stack(inner: Any) -> Any:
    """Cookies and session for the session path, then WebSocketAuthMiddleware."""
    return CookieMiddleware(SessionMiddleware(WebSocketAuthMiddleware(inner)))
