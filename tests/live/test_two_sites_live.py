"""
Two sites on one Redis server (contract §1, "Sites sharing a Redis server"):
each with its own PostgreSQL database and its own Redis database number, as a
newcomer sets them up, with the same usernames, user ids, room ids and slugs.
Redis pub/sub ignores database numbers; nothing of one site may reach the
other: chat, presence, notifications, topics, documents.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import httpx
import psycopg
import pytest
from django.conf import settings
from psycopg import sql

from chat.models import Room

from .conftest import ROOT, Ws, database_url, manage_shell
from .docs_clients import NodeDocs, node_ready

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]


def _admin_connection() -> psycopg.Connection:
    db = settings.DATABASES["default"]
    return psycopg.connect(
        host=db["HOST"],
        port=db["PORT"],
        user=db["USER"],
        password=db.get("PASSWORD") or None,
        dbname="postgres",
        autocommit=True,
    )


@pytest.fixture(scope="module")
def second_database(django_db_setup, django_db_blocker):
    """A second site's own PostgreSQL database, migrated: its URL."""
    name = f"realtime_site2_{secrets.token_hex(4)}"
    with django_db_blocker.unblock(), _admin_connection() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = database_url().rsplit("/", 1)[0] + f"/{name}"
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url},
        check=True,
        timeout=180,
    )
    yield url
    with django_db_blocker.unblock(), _admin_connection() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


# Site two gets the same people and room, with the same ids and slug.
SEED = """
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from chat.models import Room
User = get_user_model()
for pk, name in {users!r}:
    user = User.objects.create_user(username=name, password="pw", id=pk)
    print("TOKEN", name, Token.objects.create(user=user).key)
Room.objects.create(id={room_id}, slug="lobby", name="Lobby")
"""


@pytest.fixture
def two_sites(make_user, token_for, second_database, redis_server, daphnes):
    """(site one, site two): their servers, and each site's tokens by username."""
    alice, bob = make_user("alice"), make_user("bob")
    room = Room.objects.create(slug="lobby", name="Lobby")
    one_tokens = {"alice": token_for(alice), "bob": token_for(bob)}
    server = redis_server.url.rsplit("/", 1)[0]  # no database number
    one_redis, two_redis = f"{server}/1", f"{server}/2"
    seeded = manage_shell(
        SEED.format(users=[(alice.pk, "alice"), (bob.pk, "bob")], room_id=room.pk),
        redis_url=two_redis,
        database=second_database,
    )
    two_tokens = {
        line.split()[1]: line.split()[2]
        for line in seeded.splitlines()
        if line.startswith("TOKEN ")
    }
    one = daphnes(redis_url=one_redis)
    two = daphnes(redis_url=two_redis, database=second_database)
    yield (one, one_tokens, one_redis), (two, two_tokens, two_redis)
    manage_shell(
        "from django.contrib.auth import get_user_model; get_user_model().objects.all().delete();"
        "from chat.models import Room; Room.objects.all().delete()",
        redis_url=two_redis,
        database=second_database,
    )


async def test_two_sites_on_one_redis_server_exchange_nothing(two_sites, second_database):
    """Site two's chat, presence, notifications and topics reach site two's
    users and nobody on site one, whose user and room have the same ids."""
    (one, one_tokens, _), (two, two_tokens, two_redis) = two_sites
    alice_one = await Ws.connect(one.ws, token=one_tokens["alice"])
    alice_two = await Ws.connect(two.ws, token=two_tokens["alice"])
    bob_two = await Ws.connect(two.ws, token=two_tokens["bob"])
    for ws in (alice_one, alice_two):
        assert (await ws.join("lobby"))["type"] == "joined"
        subscribed = await ws.request(
            {"type": "subscribe", "topic": "public:news"}, "subscribed", "error"
        )
        assert subscribed["type"] == "subscribed"

    assert (await bob_two.join("lobby"))["type"] == "joined"
    presence = await alice_two.recv_type("presence")
    assert [join["user"]["username"] for join in presence["joins"]] == ["bob"]
    assert (await bob_two.post("lobby", "site two only"))["type"] == "ack"
    (message,) = await alice_two.messages("lobby", 1)
    assert message["content"] == "site two only"

    manage_shell(
        "from django.contrib.auth import get_user_model\n"
        "from notifications.services import notify\n"
        "from django_realtime.topics import publish\n"
        "notify(recipient=get_user_model().objects.get(username='alice'), kind='private',"
        " data={'text': 'site two secret'})\n"
        "publish('public:news', {'headline': 'site two news'})\n",
        redis_url=two_redis,
        database=second_database,
    )
    notification = await alice_two.recv_type("notification")
    assert notification["notification"]["data"] == {"text": "site two secret"}
    publication = await alice_two.recv_type("publication")
    assert publication["data"] == {"headline": "site two news"}

    # Site one's alice, in the room with the same id and slug, heard nothing.
    assert await alice_one.quiet(1.0) == []
    # Her history and the topic's hold nothing of site two either.
    again = await Ws.connect(one.ws, token=one_tokens["alice"])
    assert (await again.join("lobby", since=0))["last_seq"] == 0
    resumed = await again.request(
        {"type": "subscribe", "topic": "public:news", "since": 0}, "subscribed", "error"
    )
    assert resumed["type"] == "subscribed" and resumed["offset"] == 0
    assert [f for f in await again.quiet(0.5) if f["type"] != "presence"] == []
    for ws in (alice_one, alice_two, bob_two, again):
        await ws.close()


async def test_two_sites_documents_stay_apart(two_sites, second_database):
    """An edit of site two's document reaches site two's editors only; site
    one's document with the same room and name stays empty, live and over REST."""
    reason = node_ready()
    if reason is not None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(reason)
    (one, one_tokens, _), (two, two_tokens, _) = two_sites
    node = await NodeDocs().start()
    try:
        await node.open("one", ws=one.ws, room="lobby", name="notes", token=one_tokens["alice"])
        await node.open("two", ws=two.ws, room="lobby", name="notes", token=two_tokens["alice"])
        await node.open("two-b", ws=two.ws, room="lobby", name="notes", token=two_tokens["bob"])
        for id in ("one", "two", "two-b"):
            assert (await node.call("wait_synced", id=id))["ok"]
        await node.call("insert", id="two-b", index=0, text="site two notes")
        assert (await node.call("wait_text", id="two", text="site two notes"))["text"] == (
            "site two notes"
        )
        # Long enough for a doorbell that crossed over to have been acted on.
        assert (await node.call("wait_text", id="one", text="site two notes", timeout=2))[
            "text"
        ] == ""
    finally:
        await node.stop()
    async with httpx.AsyncClient(
        base_url=one.http, headers={"Authorization": f"Token {one_tokens['alice']}"}
    ) as client:
        response = await client.get("/api/rooms/lobby/docs/notes/", timeout=10)
    assert response.json()["text"] == ""
