"""
Provides token_user(): the active user a DRF token key belongs to, for the
transports that authenticate outside DRF (the WebSocket handshake, SSE), and
token_user_async(), the same from the event loop: on PostgreSQL one
statement over pgpool (no thread, no ORM compiling: a handshake's lookup),
elsewhere token_user in a thread.
"""

import functools
import re
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connections, router
from rest_framework.authtoken.models import Token

from . import pgpool
from .asyncdb import db

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


async def token_user_async(key: str) -> Any | None:
    """token_user, awaited; UNAVAILABLE when the database is away."""
    if not _KEY_RE.fullmatch(key):
        return None
    alias = router.db_for_read(Token)
    if not pgpool.applies(alias):
        return await db(token_user, key=key)
    user_model = get_user_model()
    row = await pgpool.fetchone(alias, _token_user_sql(alias), {"key": key})
    if row is None:
        return None
    user = user_model.from_db(alias, [f.attname for f in user_model._meta.concrete_fields], row)
    return user if user.is_active else None


@functools.cache
def _token_user_sql(alias: str) -> str:
    """SELECT the key's user's every concrete field, in their order."""
    quote = connections[alias].ops.quote_name
    user_meta = get_user_model()._meta
    columns = ", ".join(f"u.{quote(f.column)}" for f in user_meta.concrete_fields)
    token_meta = Token._meta
    return (
        f"SELECT {columns} FROM {quote(token_meta.db_table)} t"
        f" JOIN {quote(user_meta.db_table)} u"
        f" ON u.{quote(user_meta.pk.column)} = t.{quote(token_meta.get_field('user').column)}"
        f" WHERE t.{quote(token_meta.get_field('key').column)} = %(key)s"
    )
