"""Shared fixtures: users, rooms, tokens, and real daphne processes."""

from __future__ import annotations

import pytest
from channels.layers import channel_layers
from django.conf import settings
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from chat.models import Membership, Room
from django_realtime.limits import limiter
from tests import msgpack_layer
from tests.servers import RedisServer


@pytest.fixture(scope="session", autouse=True)
def _msgpack_checked_layer():
    """The in-memory layer of the unit tests checks every message against
    msgpack, as Redis would (tests/msgpack_layer.py)."""
    layer = settings.CHANNEL_LAYERS["default"]
    if layer["BACKEND"] == "channels.layers.InMemoryChannelLayer":
        checked = {**layer, "BACKEND": "tests.msgpack_layer.MsgpackCheckedLayer"}
        settings.CHANNEL_LAYERS = {"default": checked}
        channel_layers.backends.clear()
    yield


@pytest.fixture(autouse=True)
def _no_payload_lost_to_msgpack():
    """A test whose events would not survive Redis fails, even though the
    sender logged and swallowed the error."""
    del msgpack_layer.failures[:]
    yield
    assert msgpack_layer.failures == [], msgpack_layer.failures


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    """Rate-limit windows are per process; each test starts with none."""
    limiter.local._hits.clear()
    yield
    limiter.local._hits.clear()


class _RealtimeSettings:
    """`realtime.KEY = value` sets REALTIME["KEY"] for one test (pytest-django
    restores the site's settings after it)."""

    def __init__(self, settings):
        object.__setattr__(self, "_settings", settings)

    def __setattr__(self, name: str, value) -> None:
        self._settings.REALTIME = {**getattr(self._settings, "REALTIME", {}), name: value}


@pytest.fixture
def redis_server():
    """A Redis of the test's own, for tests that break it."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def realtime(settings):
    return _RealtimeSettings(settings)


@pytest.fixture
def make_user(db):
    def make(username: str, *, password: str = "pw", is_staff: bool = False):
        user = get_user_model().objects.create_user(
            username=username, password=password, is_staff=is_staff
        )
        return user

    return make


@pytest.fixture
def token_for(db):
    def make(user) -> str:
        return Token.objects.get_or_create(user=user)[0].key

    return make


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture
def carol(make_user):
    return make_user("carol")


@pytest.fixture
def general(db):
    return Room.objects.create(slug="general", name="General")


@pytest.fixture
def secret(db, alice):
    """A private room whose only member is alice."""
    room = Room.objects.create(slug="secret", name="Secret", is_private=True)
    Membership.objects.create(room=room, user=alice, role=Membership.Role.OWNER)
    return room


@pytest.fixture
def api(db):
    def make(user=None) -> APIClient:
        client = APIClient()
        if user is not None:
            client.force_authenticate(user)
        return client

    return make


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """The test database, dropped at the end even though server processes and
    sync_to_async threads may still hold connections to it."""
    yield
    from django.db import connection

    with django_db_blocker.unblock():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
