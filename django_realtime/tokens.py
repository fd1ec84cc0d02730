"""
Provides token_user(): the active user a DRF token key belongs to, for the
transports that authenticate outside DRF (the WebSocket handshake, SSE).
"""

import re
from typing import Any

from rest_framework.authtoken.models import Token

# DRF tokens are 40 hex digits; anything not like a key never reaches the
# database (a NUL in it would fail there as if the database were down).
_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")


def token_user(key: str) -> Any | None:
    """The key's user if the key is well-formed, known and its user active; else None."""
    if not _KEY_RE.fullmatch(key):
        return None
    try:
        token = Token.objects.select_related("user").get(key=key)
    except Token.DoesNotExist:
        return None
    if not token.user.is_active:
        return None
    return token.user
