"""
Authorization on a real daphne: what a user outside a private room can get
from it over REST, SSE and the WebSocket (nothing, on every frame type, and
refusals byte for byte those of a room that does not exist), spoofed
senders, single-use expiring tickets, and credentials kept out of URLs and logs.
"""

import asyncio
import json
import uuid

import httpx
import pytest
import websockets
from asgiref.sync import sync_to_async

from chat.models import Membership, Message, Room

from .conftest import DaphneProcess, Ws

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

PRIVATE = "secret"
UNKNOWN = "sekret"  # no such room; as long as PRIVATE, so the refusals compare byte for byte


@pytest.fixture
def people(make_user, token_for):
    """alice, a member of the private room `secret`; bob, who is not; the public
    room `general`."""
    alice, bob = make_user("alice"), make_user("bob")
    Room.objects.create(slug="general", name="General")
    secret = Room.objects.create(slug=PRIVATE, name="Secret", is_private=True)
    Membership.objects.create(room=secret, user=alice, role=Membership.Role.OWNER)
    return {"alice": token_for(alice), "bob": token_for(bob), "users": (alice, bob)}


def about_the_room(frames: list[dict], room: str = PRIVATE) -> list[dict]:
    """Frames that carry anything of `room`: its name, a message, a receipt..."""
    return [f for f in frames if f.get("room") == room or f["type"] in {"message", "receipt"}]


# --- REST ---------------------------------------------------------------------------


def as_unknown(text: str) -> str:
    return text.replace(PRIVATE, UNKNOWN)


async def test_an_outsider_gets_from_every_rest_endpoint_what_an_unknown_room_gets(
    server, people, http
):
    a = await Ws.connect(server.ws, token=people["alice"])
    await a.join(PRIVATE)
    await a.post(PRIVATE, "the launch code is 0000")

    def attempts(client: httpx.Client, room: str) -> dict[str, httpx.Response]:
        return {
            "history": client.get(f"/api/rooms/{room}/messages/"),
            "history after": client.get(f"/api/rooms/{room}/messages/?after=0"),
            "receipts": client.get(f"/api/rooms/{room}/receipts/"),
            "presence": client.get(f"/api/rooms/{room}/presence/"),
            "presence offline": client.get(f"/api/rooms/{room}/presence/?offline=1"),
            "post": client.post(
                f"/api/rooms/{room}/messages/",
                json={"content": "hi", "client_id": "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"},
            ),
            "read": client.post(f"/api/rooms/{room}/read/", json={"seq": 1}),
            "invite himself": client.post(f"/api/rooms/{room}/members/", json={"username": "bob"}),
            "events": client.get(f"/events/rooms/{room}/"),
        }

    with http(server, people["bob"]) as bob:
        private, unknown = attempts(bob, PRIVATE), attempts(bob, UNKNOWN)
        rooms = bob.get("/api/rooms/").json()["results"]
    for name, response in private.items():
        assert response.status_code == 404, (name, response.text)
        assert response.json()["code"] == "NOT_FOUND", name
        assert as_unknown(response.text) == unknown[name].text, name
        assert response.headers["content-type"] == unknown[name].headers["content-type"], name
        assert "launch code" not in response.text and "alice" not in response.text, name
    assert PRIVATE not in [r["slug"] for r in rooms]
    assert not await Membership.objects.filter(room__slug=PRIVATE, user__username="bob").aexists()
    assert await Message.objects.filter(room__slug=PRIVATE).acount() == 1
    await a.close()


# --- WebSocket ----------------------------------------------------------------------


async def test_an_outsider_gets_nothing_of_a_private_room_from_any_frame_type(server, people):
    """bob tries every client frame on the private room while alice is active in
    it: refusals only, and not one frame about the room reaches him."""
    a = await Ws.connect(server.ws, token=people["alice"])
    await a.join(PRIVATE)
    b = await Ws.connect(server.ws, token=people["bob"])
    await b.join("general")

    refusals = {
        "join": await b.request({"type": "join", "room": PRIVATE, "since": 0}, "joined", "error"),
        "message": await b.post(PRIVATE, "let me in"),
        "typing": await b.request({"type": "typing", "room": PRIVATE, "is_typing": True}, "error"),
        "read": await b.request({"type": "read", "room": PRIVATE, "seq": 1}, "error"),
    }
    assert {k: (f["type"], f["code"]) for k, f in refusals.items()} == {
        "join": ("error", "NOT_FOUND"),
        "message": ("error", "NOT_FOUND"),
        "typing": ("error", "BAD_REQUEST"),  # not joined: the same as for any room
        "read": ("error", "NOT_FOUND"),
    }
    # ... each, byte for byte, what a room that does not exist gets
    cid = refusals["message"]["client_id"]
    unknown = {
        "join": await b.request({"type": "join", "room": UNKNOWN, "since": 0}, "joined", "error"),
        "message": await b.post(UNKNOWN, "let me in", client_id=cid),
        "typing": await b.request({"type": "typing", "room": UNKNOWN, "is_typing": True}, "error"),
        "read": await b.request({"type": "read", "room": UNKNOWN, "seq": 1}, "error"),
    }
    for name, frame in refusals.items():
        assert as_unknown(json.dumps(frame)) == json.dumps(unknown[name]), name
    # leave and presence are harmless: they touch only bob's own connection
    assert (await b.request({"type": "leave", "room": PRIVATE}, "left"))["room"] == PRIVATE
    await b.send({"type": "presence", "status": "away"})

    # alice does everything that produces frames in the room
    await a.post(PRIVATE, "members only")
    await a.send({"type": "typing", "room": PRIVATE, "is_typing": True})
    await a.send({"type": "read", "room": PRIVATE, "seq": 1})
    await a.send({"type": "presence", "status": "away"})
    await a.request({"type": "leave", "room": PRIVATE}, "left")
    await a.join(PRIVATE)
    assert (await a.request({"type": "ping"}, "pong"))["type"] == "pong"

    leaked = about_the_room(await b.quiet(1.0))
    assert leaked == []
    joined = await a.join(PRIVATE)
    assert [p["user"]["username"] for p in joined["presence"]] == ["alice"]
    assert not await Membership.objects.filter(room__slug=PRIVATE, user__username="bob").aexists()
    assert await Message.objects.filter(room__slug=PRIVATE).acount() == 1
    await a.close()
    await b.close()


async def test_a_non_member_is_refused_the_same_whatever_the_room_id_or_spelling(server, people):
    """Rooms are named by slug only; other spellings are other (unknown) rooms."""
    b = await Ws.connect(server.ws, token=people["bob"])
    room_id = (await Room.objects.aget(slug=PRIVATE)).pk
    for room in [PRIVATE.upper(), f" {PRIVATE}", f"{PRIVATE}/", str(room_id), f"{PRIVATE}\u200b"]:
        frame = await b.join(room)
        assert (frame["type"], frame["code"]) == ("error", "NOT_FOUND"), room
    frame = await b.request({"type": "join", "room_id": room_id, "room": PRIVATE}, "error")
    assert frame["code"] == "NOT_FOUND"
    await b.close()


async def test_spoofed_sender_fields_in_frames_are_ignored(server, people):
    alice, bob = people["users"]
    a = await Ws.connect(server.ws, token=people["alice"])
    b = await Ws.connect(server.ws, token=people["bob"])
    await a.join("general")
    await b.join("general")
    spoof = {
        "user": {"id": bob.pk, "username": "bob"},
        "user_id": bob.pk,
        "username": "bob",
        "sender_id": bob.pk,
        "id": 999_999,
        "seq": 999_999,
        "created_at": "2000-01-01T00:00:00Z",
    }
    cid = str(uuid.uuid4())
    ack = await a.request(
        {"type": "message", "room": "general", "content": "hi", "client_id": cid, **spoof}, "ack"
    )
    (seen,) = await b.messages("general", 1)
    assert seen["user"] == {"id": alice.pk, "username": "alice"}
    assert (seen["id"], seen["seq"]) == (ack["id"], 1) and seen["created_at"] > "2001"
    stored = await Message.objects.select_related("user").aget(client_id=cid)
    assert stored.user.username == "alice"

    await a.send({"type": "typing", "room": "general", "is_typing": True, **spoof})
    typing = await b.recv_type("typing")
    assert typing["user"] == {"id": alice.pk, "username": "alice"}
    await b.send({"type": "read", "room": "general", "seq": 1, "user": {"id": alice.pk}})
    receipt = await a.recv_type("receipt")
    assert receipt["user"]["username"] == "bob"
    await a.close()
    await b.close()


# --- tickets --------------------------------------------------------------------------


@pytest.fixture
def short_ticket_server(django_db_setup, redis_url):
    """Tickets valid for 1 s."""
    proc = DaphneProcess(redis_url=redis_url, env={"WS_TICKET_TTL_SECONDS": "1"}).start()
    yield proc
    proc.stop()


async def test_a_ticket_is_single_use_and_expires(short_ticket_server, people, http):
    server = short_ticket_server
    with http(server, people["alice"]) as client:
        fresh, stale = (client.post("/api/auth/ws-ticket/").json()["ticket"] for _ in range(2))
    ws = await Ws.connect(f"{server.ws}?ticket={fresh}")
    joined = await ws.join("general")
    assert [p["user"]["username"] for p in joined["presence"]] == ["alice"]
    await ws.close()
    for ticket, wait in [(fresh, 0), (stale, 2.0)]:  # used once already; older than 1 s
        await asyncio.sleep(wait)
        refused = await Ws.connect(f"{server.ws}?ticket={ticket}")
        with pytest.raises(websockets.exceptions.ConnectionClosed):
            await refused.recv(timeout=5)
        assert refused.conn.close_code == 4401


@pytest.mark.parametrize(
    "ticket", ["%00", "a%00b", "x" * 300, "%27%3B--", "%F0%9F%98%80", "%ED%A0%80"]
)
async def test_a_ticket_that_is_no_ticket_is_4401_never_a_server_error(
    protocol_server, people, ticket
):
    ws = await Ws.connect(f"{protocol_server.ws}?ticket={ticket}")
    with pytest.raises(websockets.exceptions.ConnectionClosed):
        await ws.recv(timeout=5)
    assert ws.conn.close_code == 4401


@pytest.mark.parametrize("token", ["two words", "a" * 200, "x' OR '1'='1", "../../etc"])
async def test_a_token_that_is_no_token_is_4401_on_the_socket_and_401_on_rest(
    server, people, http, token
):
    ws = await Ws.connect(server.ws, token=token)
    with pytest.raises(websockets.exceptions.ConnectionClosed):
        await ws.recv(timeout=5)
    assert ws.conn.close_code == 4401
    with http(server, token) as client:
        assert client.get("/api/rooms/").status_code == 401


# --- credentials out of URLs and logs --------------------------------------------------


async def test_tokens_never_appear_in_the_server_log_or_in_pages(server, people, http):
    token = people["alice"]
    with http(server, token) as client:
        assert client.get("/api/rooms/").status_code == 200
        assert client.post("/api/rooms/general/messages/", json={"content": "x"}).is_success
        assert client.get("/api/rooms/nowhere/messages/").status_code == 404
        ticket = client.post("/api/auth/ws-ticket/").json()["ticket"]
    with http(server) as anonymous:
        response = anonymous.post(
            "/api/auth/token/", json={"username": "alice", "password": "wrong"}
        )
        assert response.status_code == 400
    ws = await Ws.connect(server.ws, token=token)
    await ws.join("general")
    await ws.close()
    ws = await Ws.connect(f"{server.ws}?ticket={ticket}")
    await ws.join("general")
    await ws.close()
    alice, _ = people["users"]
    await sync_to_async(_set_password)(alice, "pw")
    with http(server) as browser:
        _login(browser, server, "alice", "pw")
        page = browser.get("/rooms/general/").text
        index = browser.get("/").text
    assert token not in page and token not in index
    await asyncio.sleep(0.2)  # the log is written by another process
    log = server.log_text()
    assert token not in log
    assert ticket not in log  # daphne logs paths without their query strings
    assert "wrong" not in log  # nor passwords


def _set_password(user, password):
    user.set_password(password)
    user.save()


def _login(client: httpx.Client, server: DaphneProcess, username: str, password: str) -> None:
    client.get("/accounts/login/")
    response = client.post(
        "/accounts/login/",
        data={
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": client.cookies["csrftoken"],
        },
        headers={"Referer": server.http + "/accounts/login/"},
    )
    assert response.status_code == 302, response.text


# --- SSE ------------------------------------------------------------------------------


async def test_sse_gives_no_cors_grant_to_a_foreign_origin_and_refuses_outsiders(server, people):
    headers = {"Authorization": f"Token {people['bob']}", "Origin": "https://evil.example"}
    async with httpx.AsyncClient(base_url=server.http, headers=headers, timeout=10) as client:
        refused = await client.get(f"/events/rooms/{PRIVATE}/")
        assert refused.status_code == 404 and "Access-Control-Allow-Origin" not in refused.headers
        async with client.stream("GET", "/events/notifications/") as stream:
            assert stream.status_code == 200
            assert "Access-Control-Allow-Origin" not in stream.headers
            assert "Access-Control-Allow-Credentials" not in stream.headers
