"""
A session on a socket is what Django's get_user says it is (contract §2):
SECRET_KEY_FALLBACKS and AUTHENTICATION_BACKENDS count, and neither the
handshake nor a re-check ever writes the session (no flush, no new key).
In process, through the handshake's middleware; tests/live/test_key_rotation_live.py
runs the same over real sockets.
"""

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import HASH_SESSION_KEY
from django.contrib.auth.hashers import make_password
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.test import Client

from chat.auth import websocket_auth_stack
from django_realtime.credentials import (
    Credential,
    _session_store,
    _unwritable,
    session_user,
    still_valid,
)

OLD, NEW = "old-key-" + "o" * 50, "new-key-" + "n" * 50
HOST = "127.0.0.1:8000"


def log_in(user) -> str:
    client = Client()
    assert client.login(username=user.username, password="pw")
    return client.cookies["sessionid"].value


def row(key: str) -> tuple[str, str] | None:
    found = Session.objects.filter(session_key=key).first()
    return (found.session_key, found.session_data) if found else None


async def handshake_user(key: str):
    """The user the handshake finds for a page's socket with this session cookie."""
    seen = {}

    async def inner(scope, receive, send):
        seen["user"] = scope["user"]
        await send({"type": "websocket.close", "code": 1000})

    headers = [
        (b"host", HOST.encode()),
        (b"origin", f"http://{HOST}".encode()),
        (b"cookie", f"sessionid={key}".encode()),
    ]
    communicator = WebsocketCommunicator(websocket_auth_stack(inner), "/ws/", headers=headers)
    await communicator.connect()
    await communicator.disconnect()
    return seen["user"]


@pytest.mark.django_db
def test_a_session_from_before_a_key_rotation_is_accepted_and_left_as_it_was(settings, alice):
    settings.SECRET_KEY = OLD
    key = log_in(alice)
    before = row(key)
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = NEW, [OLD]
    assert session_user(key) == alice
    assert still_valid(user_id=alice.pk, credential=Credential("session", key))
    assert row(key) == before  # not re-keyed, not re-hashed: the site's next page does that


@pytest.mark.django_db
def test_without_the_old_key_as_a_fallback_the_same_session_is_refused(settings, alice):
    settings.SECRET_KEY = OLD
    key = log_in(alice)
    before = row(key)
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = NEW, []
    assert session_user(key) is None
    assert not still_valid(user_id=alice.pk, credential=Credential("session", key))
    assert row(key) == before


@pytest.mark.django_db
def test_a_session_django_would_flush_is_refused_but_not_flushed(alice):
    """A password changed behind Django's back: the session's auth hash no
    longer matches, and Django's get_user flushes such a session for a page."""
    key = log_in(alice)
    page = Client()
    page.cookies["sessionid"] = key
    assert page.get("/").status_code == 200
    type(alice).objects.filter(pk=alice.pk).update(password=make_password("other"))
    before = row(key)
    assert session_user(key) is None
    assert not still_valid(user_id=alice.pk, credential=Credential("session", key))
    assert row(key) == before
    # Django itself, for a page, flushes it: the site logs the user out, not the socket.
    assert page.get("/").status_code == 302  # to the login page
    assert row(key) is None


@pytest.mark.django_db
def test_a_session_whose_backend_was_removed_is_refused(settings, alice):
    key = log_in(alice)  # by ModelBackend
    settings.AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.AllowAllUsersModelBackend"]
    assert session_user(key) is None
    assert not still_valid(user_id=alice.pk, credential=Credential("session", key))
    assert row(key) is not None


@pytest.mark.django_db
def test_a_deactivated_user_is_refused_whatever_the_backend_allows(settings, alice):
    settings.AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.AllowAllUsersModelBackend"]
    key = log_in(alice)
    alice.is_active = False
    alice.save()
    assert session_user(key) is None
    assert not still_valid(user_id=alice.pk, credential=Credential("session", key))


@pytest.mark.django_db
def test_a_forged_hash_is_refused(alice):
    key = log_in(alice)
    store = SessionStore(session_key=key)
    store[HASH_SESSION_KEY] = "0" * 64
    store.save()
    assert session_user(key) is None


@pytest.mark.django_db
@pytest.mark.parametrize("engine", ["db", "cached_db", "cache", "signed_cookies"])
def test_the_copy_get_user_reads_never_writes_whatever_the_session_engine(settings, alice, engine):
    settings.SESSION_ENGINE = f"django.contrib.sessions.backends.{engine}"
    settings.SECRET_KEY = OLD
    key = log_in(alice)
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = NEW, [OLD]
    assert session_user(key) == alice
    copy = _unwritable(_session_store())(session_key=key)
    copy["x"] = 1
    copy.save()
    copy.cycle_key()
    copy.flush()
    stored = _session_store()(session_key=key)
    assert "x" not in stored.load() and session_user(key) == alice


@pytest.mark.django_db(transaction=True)
async def test_the_handshake_honours_fallbacks_and_backends_and_writes_nothing(settings, alice):
    settings.SECRET_KEY = OLD
    key = await sync_to_async(log_in)(alice)
    before = await sync_to_async(row)(key)
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = NEW, [OLD]
    assert (await handshake_user(key)) == alice
    settings.SECRET_KEY_FALLBACKS = []
    assert not (await handshake_user(key)).is_authenticated
    settings.SECRET_KEY_FALLBACKS = [OLD]
    settings.AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.RemoteUserBackend"]
    assert not (await handshake_user(key)).is_authenticated
    assert await sync_to_async(row)(key) == before
