"""
Notifications and Server-Sent Events against real daphne processes over real
sockets, with PostgreSQL and Redis: what a client sees on its WebSocket and on
its EventSource-style streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async

from chat.models import Membership, Message, Room
from notifications.models import Notification

from .conftest import (
    ROOT,
    SERVER_KINDS,
    ServerProcess,
    Ws,
    database_url,
    session_cookie,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]


class Sse:
    """An SSE client over a real socket: parses the stream into events.

    A task reads the lines into a queue, so waiting with a timeout never
    cancels the read itself (which would end the stream)."""

    def __init__(self, client: httpx.AsyncClient, response: httpx.Response, stack):
        self.client = client
        self.response = response
        self.stack = stack
        self.lines: asyncio.Queue[str | None] = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())
        self.comments: list[str] = []
        self.last_id: str | None = None
        self.retry: int | None = None

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        token: str | None = None,
        last_event_id: str | int | bytes | None = None,
        headers: dict[str, Any] | None = None,
    ) -> Sse:
        headers = dict(headers or {})
        if token:
            headers["Authorization"] = f"Token {token}"
        if last_event_id is not None:
            headers["Last-Event-ID"] = (
                last_event_id if isinstance(last_event_id, bytes) else str(last_event_id)
            )
        stack = contextlib.AsyncExitStack()
        client = await stack.enter_async_context(
            httpx.AsyncClient(timeout=httpx.Timeout(10, read=None))
        )
        response = await stack.enter_async_context(client.stream("GET", url, headers=headers))
        return cls(client, response, stack)

    async def _read(self) -> None:
        try:
            async for line in self.response.aiter_lines():
                await self.lines.put(line)
        except httpx.HTTPError:
            pass
        finally:
            await self.lines.put(None)

    async def block(self, timeout: float) -> dict[str, Any]:
        """The next block of lines up to a blank line, as the fields it set."""
        fields: dict[str, Any] = {}
        while True:
            line = await asyncio.wait_for(self.lines.get(), timeout)
            if line is None:
                self.lines.put_nowait(None)
                raise EOFError("the server ended the stream")
            if line == "":
                if fields:
                    return fields
                continue
            if line.startswith(":"):
                self.comments.append(line)
                fields.setdefault("comments", []).append(line)
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            fields[name] = value
            if name == "id":
                self.last_id = value
            if name == "retry":
                self.retry = int(value)

    async def event(self, *names: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next event (named one of `names`, if given) with its data parsed."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {names or 'event'} within {timeout} s")
            fields = await self.block(remaining)
            if "data" not in fields:
                continue  # a comment, or a bare id/retry: no event
            event = {
                "event": fields.get("event", "message"),
                "id": fields.get("id"),
                "data": json.loads(fields["data"]),
            }
            if not names or event["event"] in names:
                return event

    async def events(self, n: int, *names: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        return [await self.event(*names, timeout=timeout) for _ in range(n)]

    async def quiet(self, seconds: float = 0.7) -> list[dict[str, Any]]:
        """Every event that arrives within `seconds` (to check that none does)."""
        got = []
        with contextlib.suppress(TimeoutError):
            while True:
                got.append(await self.event(timeout=seconds))
        return got

    async def close(self) -> None:
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader
        await self.stack.aclose()


@pytest.fixture
def people(make_user, token_for):
    """alice and bob with API tokens, and the public room general."""
    alice, bob = make_user("alice"), make_user("bob")
    Room.objects.create(slug="general", name="General")
    return {"alice": token_for(alice), "bob": token_for(bob), "users": (alice, bob)}


def notifications_url(server: ServerProcess) -> str:
    return f"{server.http}/events/notifications/"


def room_url(server: ServerProcess, slug: str = "general") -> str:
    return f"{server.http}/events/rooms/{slug}/"


async def mention(server: ServerProcess, token: str, text: str, room: str = "general") -> dict:
    async with httpx.AsyncClient(
        base_url=server.http, headers={"Authorization": f"Token {token}"}, timeout=10
    ) as client:
        response = await client.post(f"/api/rooms/{room}/messages/", json={"content": text})
    assert response.status_code == 201, response.text
    return response.json()


# --- mentions reach every connection ---------------------------------------------------


async def test_a_mention_reaches_the_recipients_websocket_and_sse_stream(server, server_b, people):
    """bob listens on a WebSocket on one process and an SSE stream on the
    other; alice mentions him over the WebSocket: both get the same notification."""
    bob_ws = await Ws.connect(server.ws, token=people["bob"])
    bob_sse = await Sse.open(notifications_url(server_b), token=people["bob"])
    await bob_sse.block(timeout=10)  # the head: the stream is subscribed
    alice = await Ws.connect(server.ws, token=people["alice"])
    ack = await alice.post("general", "hey @bob, look")
    frame = await bob_ws.recv_type("notification")
    note = frame["notification"]
    assert note["kind"] == "mention" and note["read"] is False
    assert note["data"] == {
        "room": "general",
        "message_id": ack["id"],
        "seq": ack["seq"],
        "from": {"id": people["users"][0].pk, "username": "alice"},
        "excerpt": "hey @bob, look",
    }
    event = await bob_sse.event("notification")
    assert event["id"] == str(note["id"])
    assert event["data"] == frame
    assert not [f for f in await alice.quiet(0.5) if f["type"] == "notification"]
    await bob_sse.close()
    for ws in (bob_ws, alice):
        await ws.close()


async def test_sse_resumes_after_last_event_id_with_exactly_the_missed_events(
    protocol_server, people
):
    sse = await Sse.open(notifications_url(protocol_server), token=people["bob"])
    await mention(protocol_server, people["alice"], "@bob one")
    first = await sse.event("notification")
    await sse.close()
    for text in ["@bob two", "@bob three", "@bob four"]:
        await mention(protocol_server, people["alice"], text)
    again = await Sse.open(
        notifications_url(protocol_server), token=people["bob"], last_event_id=first["id"]
    )
    missed = await again.events(3, "notification")
    assert [e["data"]["notification"]["data"]["excerpt"] for e in missed] == [
        "@bob two",
        "@bob three",
        "@bob four",
    ]
    ids = [int(e["id"]) for e in missed]
    assert ids == sorted(ids) and ids[0] > int(first["id"])
    await mention(protocol_server, people["alice"], "@bob live")
    live = await again.event("notification")
    assert live["data"]["notification"]["data"]["excerpt"] == "@bob live"
    assert await again.quiet() == []
    await again.close()


async def test_a_fresh_stream_starts_from_now_and_says_where_that_is(protocol_server, people):
    """No Last-Event-ID: nothing is replayed, and a bare `id:` tells the client
    its position, so even its first reconnect loses nothing."""
    await mention(protocol_server, people["alice"], "@bob before")
    sse = await Sse.open(notifications_url(protocol_server), token=people["bob"])
    head = await sse.block(timeout=10)
    (before,) = await sync_to_async(list)(Notification.objects.all())
    assert head["id"] == str(before.pk) and "data" not in head
    assert int(head["retry"]) >= 1000
    assert await sse.quiet(0.5) == []
    await sse.close()
    await mention(protocol_server, people["alice"], "@bob while away")
    resumed = await Sse.open(
        notifications_url(protocol_server), token=people["bob"], last_event_id=head["id"]
    )
    event = await resumed.event("notification")
    assert event["data"]["notification"]["data"]["excerpt"] == "@bob while away"
    await resumed.close()


@pytest.mark.parametrize("forged", ["abc", "-1", "1" * 40, "99999999999", "١٢".encode()])
async def test_a_forged_last_event_id_streams_from_now(server, people, forged):
    await mention(server, people["alice"], "@bob old")
    sse = await Sse.open(notifications_url(server), token=people["bob"], last_event_id=forged)
    head = await sse.block(timeout=10)
    assert "id" in head  # a fresh position, not a replay
    assert await sse.quiet(0.5) == []
    await mention(server, people["alice"], "@bob new")
    assert (await sse.event("notification"))["data"]["notification"]["data"]["excerpt"] == (
        "@bob new"
    )
    await sse.close()


# --- from plain synchronous code -----------------------------------------------------


def run_django(code: list[str], redis_url: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": redis_url,
        "DJANGO_SETTINGS_MODULE": "project.settings",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", *code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result


async def test_a_notification_from_plain_sync_code_arrives_live(
    server, server_b, people, redis_url
):
    """notify() called from a separate Python process (manage.py shell), no
    consumer and no server involved, reaches bob's open WebSocket and SSE stream."""
    bob_ws = await Ws.connect(server.ws, token=people["bob"])
    bob_sse = await Sse.open(notifications_url(server_b), token=people["bob"])
    await bob_sse.block(timeout=10)
    code = (
        "from django.contrib.auth import get_user_model\n"
        "from notifications.services import notify\n"
        "bob = get_user_model().objects.get(username='bob')\n"
        "print(notify(recipient=bob, kind='announcement', data={'text': 'from a script'}).pk)\n"
    )
    result = await asyncio.to_thread(run_django, ["shell", "-c", code], redis_url)
    pk = int(result.stdout.strip().splitlines()[-1])
    frame = await bob_ws.recv_type("notification")
    assert frame["notification"]["id"] == pk
    assert frame["notification"]["data"] == {"text": "from a script"}
    event = await bob_sse.event("notification")
    assert event["id"] == str(pk) and event["data"] == frame
    await bob_sse.close()
    await bob_ws.close()


async def test_the_notify_command_reaches_open_connections(server, people, redis_url):
    bob_ws = await Ws.connect(server.ws, token=people["bob"])
    await asyncio.to_thread(
        run_django, ["notify", "bob", "--text", "maintenance at noon", "--from", "alice"], redis_url
    )
    frame = await bob_ws.recv_type("notification")
    assert frame["notification"]["kind"] == "announcement"
    assert frame["notification"]["data"]["text"] == "maintenance at noon"
    assert frame["notification"]["data"]["from"]["username"] == "alice"
    await bob_ws.close()


# --- the room stream ---------------------------------------------------------------------


async def test_a_room_stream_gets_messages_posted_over_rest_in_the_websocket_shape(
    server, server_b, people
):
    sse = await Sse.open(room_url(server_b), token=people["bob"])
    head = await sse.block(timeout=10)
    assert head["id"] == "0"
    posted = [await mention(server, people["alice"], f"m{i}") for i in range(3)]
    got = await sse.events(3, "message")
    assert [e["id"] for e in got] == ["1", "2", "3"]
    assert [e["data"] for e in got] == posted  # the REST body is the WebSocket frame
    ws = await Ws.connect(server.ws, token=people["bob"])
    await ws.join("general", since=2)
    (frame,) = await ws.messages("general", 1)
    assert frame == got[2]["data"]
    assert await sse.quiet() == []
    await sse.close()
    await ws.close()


async def test_a_room_stream_resumes_after_last_event_id(protocol_server, people):
    for i in range(5):
        await mention(protocol_server, people["alice"], f"m{i}")
    sse = await Sse.open(room_url(protocol_server), token=people["bob"], last_event_id=2)
    assert [e["id"] for e in await sse.events(3, "message")] == ["3", "4", "5"]
    await mention(protocol_server, people["alice"], "live")
    live = await sse.event("message")
    assert live["id"] == "6" and live["data"]["content"] == "live"
    assert await sse.quiet() == []
    await sse.close()


async def test_a_room_stream_is_read_only_and_does_not_join_the_room(server, people):
    bob = people["users"][1]
    sse = await Sse.open(room_url(server), token=people["bob"])
    await sse.block(timeout=10)
    await sse.close()
    assert not await Membership.objects.filter(user=bob).aexists()


async def test_a_ban_ends_the_room_stream_with_kicked(protocol_server, people, redis_url):
    """A moderator's ban reaches the user's connections (chat.events.notify_kicked,
    here sent from another process): the stream says `kicked` and ends, and
    reconnecting is refused."""
    _, bob = people["users"]
    room = await Room.objects.aget(slug="general")
    sse = await Sse.open(room_url(protocol_server), token=people["bob"])
    await sse.block(timeout=10)
    await Membership.objects.acreate(room=room, user=bob, is_banned=True)
    code = (
        "from chat import events\n"
        f"events.notify_kicked(user_id={bob.pk}, room_id={room.pk}, room_slug='general',"
        " reason='spam')\n"
    )
    await asyncio.to_thread(run_django, ["shell", "-c", code], redis_url)
    kicked = await sse.event("kicked")
    assert kicked["data"] == {"type": "kicked", "room": "general", "reason": "spam"}
    assert kicked["id"] is None
    with pytest.raises(EOFError):
        await sse.block(timeout=5)
    await sse.close()
    async with httpx.AsyncClient(timeout=10) as client:
        again = await client.get(
            room_url(protocol_server), headers={"Authorization": f"Token {people['bob']}"}
        )
    assert again.status_code == 403


async def test_a_ban_the_layer_never_announced_ends_the_stream_at_the_next_refresh(
    quick_server, people
):
    _, bob = people["users"]
    room = await Room.objects.aget(slug="general")
    sse = await Sse.open(room_url(quick_server), token=people["bob"])
    await sse.block(timeout=10)
    await Membership.objects.acreate(room=room, user=bob, is_banned=True)
    kicked = await sse.event("kicked", timeout=5)
    assert kicked["data"]["room"] == "general"
    with pytest.raises(EOFError):
        await sse.block(timeout=5)
    await sse.close()


async def test_a_message_the_layer_never_announced_arrives_at_the_next_refresh(
    quick_server, people
):
    """The layer is a doorbell: a message stored without one (as if the layer
    had dropped it) still reaches the stream, from the database."""
    alice, _ = people["users"]
    sse = await Sse.open(room_url(quick_server), token=people["bob"])
    await sse.block(timeout=10)
    await sync_to_async(_store_silently)(alice, "general", "no doorbell")
    event = await sse.event("message", timeout=5)
    assert event["id"] == "1" and event["data"]["content"] == "no doorbell"
    await sse.close()


def _store_silently(user, slug, content):
    room = Room.objects.get(slug=slug)
    Room.objects.filter(pk=room.pk).update(last_seq=room.last_seq + 1)
    Message.objects.create(
        room=room, seq=room.last_seq + 1, user=user, client_id=uuid.uuid4(), content=content
    )


# --- authentication, access, headers, keep-alive ----------------------------------------


async def test_sse_needs_credentials(server, people):
    async with httpx.AsyncClient(timeout=10) as client:
        for url in [notifications_url(server), room_url(server)]:
            anonymous = await client.get(url)
            assert anonymous.status_code == 401
            assert anonymous.json()["detail"]
            assert anonymous.headers["WWW-Authenticate"] == "Token"
            forged = await client.get(url, headers={"Authorization": "Token nope"})
            assert forged.status_code == 401


async def test_sse_refuses_a_private_room_as_it_refuses_an_unknown_one_404(server, people):
    alice, _ = people["users"]
    room = await Room.objects.acreate(slug="secret", name="Secret", is_private=True)
    await Membership.objects.acreate(room=room, user=alice)
    headers = {"Authorization": f"Token {people['bob']}"}
    async with httpx.AsyncClient(timeout=10, headers=headers) as client:
        private = await client.get(room_url(server, "secret"))
        unknown = await client.get(room_url(server, "sekret"))
        assert unknown.status_code == 404 and unknown.json()["code"] == "NOT_FOUND"
        assert private.status_code == 404
        assert private.text.replace("secret", "sekret") == unknown.text
    member = await Sse.open(room_url(server, "secret"), token=people["alice"])
    assert member.response.status_code == 200
    await member.close()


async def test_a_banned_user_is_refused_403(server, people):
    _, bob = people["users"]
    room = await Room.objects.aget(slug="general")
    await Membership.objects.acreate(room=room, user=bob, is_banned=True)
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(
            room_url(server), headers={"Authorization": f"Token {people['bob']}"}
        )
    assert response.status_code == 403


async def test_a_session_cookie_authenticates_a_stream(server, people):
    alice, _ = people["users"]
    cookie = await session_cookie(server, alice)
    sse = await Sse.open(notifications_url(server), headers={"Cookie": cookie})
    assert sse.response.status_code == 200
    await sse.close()


async def test_sse_headers_disable_caching_and_proxy_buffering(protocol_server, people):
    sse = await Sse.open(notifications_url(protocol_server), token=people["bob"])
    headers = sse.response.headers
    assert sse.response.status_code == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    assert headers["Cache-Control"] == "no-cache"
    assert headers["X-Accel-Buffering"] == "no"
    await sse.block(timeout=10)
    assert sse.retry is not None and sse.retry >= 1000
    await sse.close()


@pytest.fixture(scope="module", params=SERVER_KINDS)
def quick_server(request, django_db_setup, redis_url):
    """A server (daphne, then uvicorn) that sends the keep-alive comment after
    1 s of silence, refreshes every stream (groups, access, catch-up) about
    every second and allows two streams per user."""
    proc = ServerProcess(
        kind=request.param,
        redis_url=redis_url,
        env={
            "SSE_KEEPALIVE_SECONDS": "1",
            "GROUP_REFRESH_SECONDS": "1",
            "SSE_MAX_STREAMS_PER_USER": "2",
        },
    ).start()
    yield proc
    proc.stop()


async def test_a_keep_alive_comment_goes_out_after_each_silence(quick_server, people):
    for url in [notifications_url(quick_server), room_url(quick_server)]:
        sse = await Sse.open(url, token=people["bob"])
        await sse.block(timeout=10)
        started = time.monotonic()
        for _ in range(2):
            block = await sse.block(timeout=3)
            assert block == {"comments": [": keep-alive"]}
        assert 1.5 < time.monotonic() - started < 4.5
        await sse.close()


async def test_a_mention_burst_on_two_processes_reaches_the_stream_once_in_order(
    unlimited_server, server_b, people, make_user, token_for
):
    """Posters on two processes mention bob concurrently: his stream gets every
    notification exactly once, in increasing id, and a resume after the last
    one replays nothing."""
    posters = [await sync_to_async(make_user)(f"poster{i}") for i in range(4)]
    tokens = [await sync_to_async(token_for)(u) for u in posters]
    sse = await Sse.open(notifications_url(server_b), token=people["bob"])
    await sse.block(timeout=10)
    servers = [unlimited_server, server_b]
    per_poster = 10

    async def poster(i: int) -> None:
        ws = await Ws.connect(servers[i % 2].ws, token=tokens[i])
        for n in range(per_poster):
            await ws.send(
                {
                    "type": "message",
                    "room": "general",
                    "content": f"@bob {i}:{n}",
                    "client_id": str(uuid.uuid4()),
                }
            )
        for _ in range(per_poster):
            assert (await ws.recv_type("ack", "error", timeout=30))["type"] == "ack"
        await ws.close()

    await asyncio.gather(*(poster(i) for i in range(len(posters))))
    total = per_poster * len(posters)
    got = await sse.events(total, "notification", timeout=30)
    ids = [int(e["id"]) for e in got]
    stored = await sync_to_async(list)(
        Notification.objects.filter(recipient=people["users"][1]).values_list("pk", flat=True)
    )
    assert ids == sorted(stored)
    assert await sse.quiet() == []
    await sse.close()
    resumed = await Sse.open(
        notifications_url(server_b), token=people["bob"], last_event_id=ids[-1]
    )
    assert await resumed.quiet() == []
    await resumed.close()


async def test_a_user_may_hold_only_so_many_streams(quick_server, people):
    first = await Sse.open(notifications_url(quick_server), token=people["bob"])
    second = await Sse.open(room_url(quick_server), token=people["bob"])
    for sse in (first, second):
        await sse.block(timeout=10)
    headers = {"Authorization": f"Token {people['bob']}"}
    async with httpx.AsyncClient(timeout=10, headers=headers) as client:
        refused = await client.get(notifications_url(quick_server))
        assert refused.status_code == 429 and refused.json()["code"] == "RATE_LIMITED"
        assert int(refused.headers["Retry-After"]) >= 1
        await first.close()
        for _ in range(50):
            if not await _refused(client, notifications_url(quick_server)):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the closed stream still counts")
    alice = await Sse.open(notifications_url(quick_server), token=people["alice"])
    assert alice.response.status_code == 200  # the cap is per user
    await alice.close()
    await second.close()


async def _refused(client: httpx.AsyncClient, url: str) -> bool:
    async with client.stream("GET", url) as response:
        return response.status_code == 429


async def test_last_event_id_may_be_given_as_a_query_parameter(protocol_server, people):
    for i in range(3):
        await mention(protocol_server, people["alice"], f"m{i}")
    sse = await Sse.open(room_url(protocol_server) + "?last_event_id=1", token=people["bob"])
    assert [e["id"] for e in await sse.events(2, "message")] == ["2", "3"]
    await sse.close()
