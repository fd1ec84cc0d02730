"""
Provides session end (contract §2): a WebSocket or SSE stream whose session
or token stops being valid is closed on every process within about a second
(logout, token deletion, user changes, and a re-check every
SESSION_RECHECK_SECONDS); a session re-keyed by Django closes with 1012 so
the reconnect decides. Validity is Django's own get_user, on a copy no socket
writes. Only fingerprints travel on the layer. Why: docs/architecture.md,
"credentials".
"""

import enum
import functools
import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user, get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.http import HttpRequest
from django.utils.module_loading import import_string
from rest_framework.authtoken.models import Token

from . import bus
from .asyncdb import db
from .errors import Unavailable

logger = logging.getLogger(__name__)

# Layer event types, sent to the user's group (bus.user_group).
END = "session.end"
RECHECK = "session.recheck"


class Verdict(enum.Enum):
    """What a re-check finds of a connection's credential."""

    VALID = "valid"
    ENDED = "ended"  # close with 4401
    MOVED = "moved"  # the session is gone without a logout: close with 1012


@dataclass(frozen=True)
class Credential:
    """What a connection was opened with: `kind` "session" or "token", and its key."""

    kind: str
    key: str

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.kind}:{self.key}".encode()).hexdigest()[:32]


def credential_of(request: Any) -> Credential | None:
    """What an authenticated HTTP request (Django's or DRF's) came with: its
    token, else its session."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "token" and key.strip():
        return Credential("token", key.strip())
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    return Credential("session", session_key) if session_key else None


def verdict(*, user_id: int, credential: Credential | None) -> Verdict:
    """Whether the credential still authenticates the user (an active one)."""
    if credential is not None and credential.kind == "session":
        found = session_user(credential.key)
        if found is not None and found.pk == user_id:
            return Verdict.VALID
        return Verdict.ENDED if _session_readable(credential.key) else Verdict.MOVED
    user = get_user_model()._default_manager.filter(pk=user_id).first()
    if user is None or not getattr(user, "is_active", True):
        return Verdict.ENDED
    if credential is None:  # a ticket: bound to the user, not to a credential
        return Verdict.VALID
    if credential.kind == "token":
        exists = Token.objects.filter(key=credential.key, user_id=user_id).exists()
        return Verdict.VALID if exists else Verdict.ENDED
    return Verdict.ENDED


def still_valid(*, user_id: int, credential: Credential | None) -> bool:
    """Whether the credential still authenticates the user (an active one)."""
    return verdict(user_id=user_id, credential=credential) is Verdict.VALID


def _session_readable(session_key: str) -> bool:
    """Whether the store still holds data under this key (it may no longer
    authenticate anyone: a password changed, a backend removed)."""
    return bool(_unwritable(_session_store())(session_key=session_key).load())


def session_user(session_key: str) -> Any | None:
    """The active user Django's get_user finds for a request carrying this
    session, else None. get_user reads a copy of the session that is never
    saved or deleted (see the module's docstring)."""
    request = HttpRequest()
    request.session = _unwritable(_session_store())(session_key=session_key)
    user = get_user(request)
    if not user.is_authenticated or not getattr(user, "is_active", True):
        return None  # a deactivated user's connections end (§2), whatever the backend
    return user


def _session_store() -> type:
    return import_string(f"{settings.SESSION_ENGINE}.SessionStore")


@functools.cache
def _unwritable(store: type) -> type:
    """`store` (the site's SessionStore) with every write a no-op: reads work
    as ever; flush, cycle_key and setting keys change only this copy."""
    # Named as `store` is: SessionBase.key_salt, which signs the session's
    # data, is made of the class's __qualname__.
    names = {"__qualname__": store.__qualname__, "__module__": store.__module__}
    return type(store.__name__, (_NoWrites, store), names)


class _NoWrites:
    """Every SessionBase method that writes to the store, made to change
    only this copy: flush empties it, cycle_key keeps its key."""

    def save(self, must_create: bool = False) -> None:
        pass

    async def asave(self, must_create: bool = False) -> None:
        pass

    def create(self) -> None:
        pass

    async def acreate(self) -> None:
        pass

    def delete(self, session_key: str | None = None) -> None:
        pass

    async def adelete(self, session_key: str | None = None) -> None:
        pass

    def flush(self) -> None:
        self.clear()  # type: ignore[attr-defined]

    async def aflush(self) -> None:
        self.clear()  # type: ignore[attr-defined]

    def cycle_key(self) -> None:
        pass

    async def acycle_key(self) -> None:
        pass


async def verdict_async(*, user_id: int, credential: Credential | None) -> Verdict:
    """verdict() from the event loop. While the database is away the answer
    is VALID: check again later rather than cut everyone off."""
    try:
        return await db(verdict, user_id=user_id, credential=credential)
    except Unavailable:
        return Verdict.VALID


async def still_valid_async(*, user_id: int, credential: Credential | None) -> bool:
    """still_valid() from the event loop (VALID while the database is away)."""
    return await verdict_async(user_id=user_id, credential=credential) is Verdict.VALID


def ends(event: dict[str, Any], credential: Credential | None) -> bool:
    """Whether a `session.end` event is about `credential`."""
    return credential is not None and event.get("credential") == credential.fingerprint


# --- telling the connections -----------------------------------------------------------
def end(*, user_id: int, credential: Credential) -> None:
    """Close every connection opened with `credential`, on every process."""
    event = {"type": END, "credential": credential.fingerprint}
    transaction.on_commit(lambda: bus.send_sync(bus.user_group(user_id), event))


def recheck(*, user_id: int) -> None:
    """Have every connection of the user check its credential again."""
    event = {"type": RECHECK}
    transaction.on_commit(lambda: bus.send_sync(bus.user_group(user_id), event))


def _on_logout(sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
    session = getattr(request, "session", None)
    key = getattr(session, "session_key", None)
    if user is not None and key:
        end(user_id=user.pk, credential=Credential("session", key))


def _on_token_deleted(sender: Any, instance: Token, **kwargs: Any) -> None:
    end(user_id=instance.user_id, credential=Credential("token", instance.key))


def _on_user_changed(
    sender: Any, instance: Any, created: bool = False, update_fields: Any = None, **kwargs: Any
) -> None:
    if created or instance.pk is None:
        return  # a new user has no connections yet
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return  # a login (Django saves only last_login): nothing to end
    recheck(user_id=instance.pk)


def connect_signals() -> None:
    """Wire the triggers above (chat's AppConfig.ready)."""
    user_logged_out.connect(_on_logout, dispatch_uid="realtime-session-end")
    post_delete.connect(_on_token_deleted, sender=Token, dispatch_uid="realtime-token-end")
    user_model = get_user_model()
    post_save.connect(_on_user_changed, sender=user_model, dispatch_uid="realtime-user-save")
    post_delete.connect(_on_user_changed, sender=user_model, dispatch_uid="realtime-user-del")
