"""
The chat protocol against a real daphne over real sockets, with PostgreSQL and
Redis: what a client sees.
"""

import asyncio
import json
import uuid

import pytest
import websockets
import websockets.exceptions  # not loaded by `import websockets` alone
from asgiref.sync import sync_to_async

from chat.models import Membership, Message, Room

from .conftest import Ws, session_cookie

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]


@pytest.fixture
def people(make_user, token_for):
    """alice and bob with API tokens, and the public room general."""
    alice, bob = make_user("alice"), make_user("bob")
    Room.objects.create(slug="general", name="General")
    return {"alice": token_for(alice), "bob": token_for(bob), "users": (alice, bob)}


# --- handshakes -------------------------------------------------------------------


async def test_a_token_header_authenticates_and_ping_gets_pong(server, people):
    ws = await Ws.connect(server.ws, token=people["alice"])
    assert await ws.request({"type": "ping", "ref": "p1"}, "pong") == {"type": "pong", "ref": "p1"}
    await ws.close()


@pytest.mark.parametrize("token", [None, "not-a-token"])
async def test_no_valid_credentials_is_closed_with_4401(protocol_server, people, token):
    ws = await Ws.connect(protocol_server.ws, token=token)
    with pytest.raises(websockets.exceptions.ConnectionClosed):
        await ws.recv(timeout=5)
    assert ws.conn.close_code == 4401


# Foreign origins, and lookalikes of the allowed hosts (127.0.0.1, localhost).
# Refused with 403; or 400 where the WebSocket layer (autobahn) finds the
# Origin malformed before the application sees it.
FOREIGN_ORIGINS = [
    "https://evil.example",
    "http://127.0.0.1.evil.com",
    "http://localhost.evil.com",
    "http://127.0.0.1evil.com",
    "http://evil-localhost",
    "http://127.0.0.2",
    "http://localhost.",
    "http://localhost:8000.evil.com",
    "http://evil.com@127.0.0.1",
    "http://evil.com\\@localhost",
    "http://127.0.0.1/evil",
    "ws://127.0.0.1",
    "null",
    "file://",
    "",
]


@pytest.mark.parametrize("origin", FOREIGN_ORIGINS)
async def test_a_foreign_origin_is_refused_at_the_handshake(server, people, origin):
    with pytest.raises(websockets.exceptions.InvalidStatus) as info:
        await Ws.connect(server.ws, token=people["alice"], origin=origin)
    assert info.value.response.status_code in {400, 403}


async def test_a_same_host_origin_with_a_token_is_accepted(server, people):
    ws = await Ws.connect(server.ws, token=people["alice"], origin=server.http)
    assert (await ws.join("general"))["type"] == "joined"
    await ws.close()


async def test_a_session_cookie_works_with_an_allowed_origin_only(server, people):
    """The browser path: a session cookie with the site's Origin; without an
    Origin the same cookie is not enough (4401)."""
    alice, _ = people["users"]
    cookie = await session_cookie(server, alice)
    ws = await websockets.connect(
        server.ws, origin=server.http, additional_headers={"Cookie": cookie}
    )
    ws = Ws(ws)
    assert (await ws.join("general"))["type"] == "joined"
    await ws.close()
    bare = Ws(await websockets.connect(server.ws, additional_headers={"Cookie": cookie}))
    with pytest.raises(websockets.exceptions.ConnectionClosed):
        await bare.recv(timeout=5)
    assert bare.conn.close_code == 4401


@pytest.mark.parametrize("origin", FOREIGN_ORIGINS)
async def test_a_session_cookie_from_a_foreign_or_lookalike_origin_is_refused_at_the_handshake(
    server, people, origin
):
    """Cross-site WebSocket hijacking: the victim's browser sends its cookie
    with the attacker's page as the Origin."""
    alice, _ = people["users"]
    cookie = await session_cookie(server, alice)
    with pytest.raises(websockets.exceptions.InvalidStatus) as info:
        await websockets.connect(server.ws, origin=origin, additional_headers={"Cookie": cookie})
    assert info.value.response.status_code in {400, 403}


async def test_a_ticket_works_once(server, people, http):
    with http(server, people["alice"]) as client:
        ticket = client.post("/api/auth/ws-ticket/").json()["ticket"]
    ws = await Ws.connect(f"{server.ws}?ticket={ticket}")
    assert (await ws.join("general"))["type"] == "joined"
    await ws.close()
    reused = await Ws.connect(f"{server.ws}?ticket={ticket}")
    with pytest.raises(websockets.exceptions.ConnectionClosed):
        await reused.recv(timeout=5)
    assert reused.conn.close_code == 4401


# --- messages ---------------------------------------------------------------------


async def test_a_message_reaches_every_member_with_ack_to_the_sender(server, people):
    a = await Ws.connect(server.ws, token=people["alice"])
    b = await Ws.connect(server.ws, token=people["bob"])
    await a.join("general")
    await b.join("general")
    cid = str(uuid.uuid4())
    ack = await a.post("general", "hello <b>bob</b>", client_id=cid)
    assert ack["type"] == "ack" and ack["client_id"] == cid and ack["seq"] == 1
    (seen_by_bob,) = await b.messages("general", 1)
    (seen_by_alice,) = await a.messages("general", 1)
    assert seen_by_bob == seen_by_alice
    assert seen_by_bob["content"] == "hello <b>bob</b>"
    assert seen_by_bob["user"]["username"] == "alice"
    assert (seen_by_bob["id"], seen_by_bob["seq"]) == (ack["id"], ack["seq"])
    assert seen_by_bob["created_at"].endswith("Z")
    await a.close()
    await b.close()


async def test_messages_arrive_in_seq_order_once(server, people):
    a = await Ws.connect(server.ws, token=people["alice"])
    b = await Ws.connect(server.ws, token=people["bob"])
    await a.join("general")
    await b.join("general")
    for i in range(15):
        await a.send(
            {
                "type": "message",
                "room": "general",
                "content": f"m{i}",
                "client_id": str(uuid.uuid4()),
            }
        )
    got = await b.messages("general", 15)
    assert [m["seq"] for m in got] == list(range(1, 16))
    assert [m["content"] for m in got] == [f"m{i}" for i in range(15)]
    assert not [f for f in await b.quiet(0.5) if f["type"] == "message"]
    await a.close()
    await b.close()


async def test_a_retried_client_id_is_acked_with_the_original(server, people):
    """A send repeated after a reconnect creates nothing new."""
    cid = str(uuid.uuid4())
    a = await Ws.connect(server.ws, token=people["alice"])
    first = await a.post("general", "once", client_id=cid)
    await a.close()
    again_ws = await Ws.connect(server.ws, token=people["alice"])
    again = await again_ws.post("general", "once", client_id=cid)
    assert (again["id"], again["seq"]) == (first["id"], first["seq"])
    assert await Message.objects.filter(client_id=cid).acount() == 1
    await again_ws.close()


async def test_resume_with_since_replays_exactly_what_was_missed(protocol_server, people):
    a = await Ws.connect(protocol_server.ws, token=people["alice"])
    for i in range(5):
        await a.post("general", f"m{i}")
    b = await Ws.connect(protocol_server.ws, token=people["bob"])
    joined = await b.join("general", since=2)
    assert joined["last_seq"] == 5 and joined["truncated"] is False
    assert [m["seq"] for m in await b.messages("general", 3)] == [3, 4, 5]
    await a.post("general", "live")
    assert [m["seq"] for m in await b.messages("general", 1)] == [6]
    assert not [f for f in await b.quiet(0.5) if f["type"] == "message"]
    await a.close()
    await b.close()


async def test_resume_beyond_1000_missed_is_truncated_to_the_latest_1000(protocol_server, people):
    alice, _ = people["users"]
    room = await Room.objects.aget(slug="general")
    await sync_to_async(_bulk_messages)(room, alice, 1005)
    b = await Ws.connect(protocol_server.ws, token=people["bob"])
    joined = await b.join("general", since=0)
    assert joined["truncated"] is True and joined["last_seq"] == 1005
    got = await b.messages("general", 1000)
    assert [m["seq"] for m in got] == list(range(6, 1006))
    await b.close()


def _bulk_messages(room, user, n):
    Message.objects.bulk_create(
        Message(room=room, seq=i, user=user, client_id=uuid.uuid4(), content=f"m{i}")
        for i in range(1, n + 1)
    )
    Room.objects.filter(pk=room.pk).update(last_seq=n)


async def test_resume_during_a_burst_of_concurrent_posters_loses_and_repeats_nothing(
    unlimited_server, server_b, make_user, token_for
):
    """Six posters on two processes hammer one room while a reader keeps
    reconnecting with `since`: the reader ends with every seq exactly once, in order."""
    await Room.objects.acreate(slug="burst", name="Burst")
    posters = [await sync_to_async(make_user)(f"poster{i}") for i in range(6)]
    tokens = [await sync_to_async(token_for)(u) for u in posters]
    reader_token = await sync_to_async(token_for)(await sync_to_async(make_user)("reader"))
    per_poster = 40
    servers = [unlimited_server, server_b]

    async def poster(i: int) -> None:
        ws = await Ws.connect(servers[i % 2].ws, token=tokens[i])
        for n in range(per_poster):
            await ws.send(
                {
                    "type": "message",
                    "room": "burst",
                    "content": f"{i}:{n}",
                    "client_id": str(uuid.uuid4()),
                }
            )
            if n % 10 == 0:
                await asyncio.sleep(0.01)
        acks = 0
        while acks < per_poster:
            frame = await ws.recv(timeout=30)
            assert frame["type"] != "error", frame
            acks += frame["type"] == "ack"
        await ws.close()

    async def reader() -> list[int]:
        seen: list[int] = []
        for turn in range(6):
            ws = await Ws.connect(servers[turn % 2].ws, token=reader_token)
            joined = await ws.join("burst", since=seen[-1] if seen else 0)
            assert joined["type"] == "joined"
            for _ in range(15):
                frame = await ws.recv_type("message", timeout=30)
                seen.append(frame["seq"])
            await ws.close()
        return seen

    total = per_poster * len(posters)
    read_task = asyncio.create_task(reader())
    await asyncio.gather(*(poster(i) for i in range(len(posters))))
    seen = await read_task
    final = await Ws.connect(server_b.ws, token=reader_token)
    await final.join("burst", since=seen[-1])
    rest = total - len(seen)
    seen += [m["seq"] for m in await final.messages("burst", rest)] if rest else []
    assert seen == list(range(1, total + 1))
    assert not [f for f in await final.quiet(0.5) if f["type"] == "message"]
    await final.close()


async def test_a_message_posted_on_one_process_reaches_the_other(server, server_b, people):
    a = await Ws.connect(server.ws, token=people["alice"])
    b = await Ws.connect(server_b.ws, token=people["bob"])
    await a.join("general")
    await b.join("general")
    await a.post("general", "across")
    (msg,) = await b.messages("general", 1)
    assert msg["content"] == "across"
    await a.close()
    await b.close()


async def test_an_idle_connection_still_receives_after_15_seconds(server, people):
    """Regression for channels_redis#422: redis-py 8's 5 s read timeout must not
    kill an idle consumer."""
    a = await Ws.connect(server.ws, token=people["alice"])
    b = await Ws.connect(server.ws, token=people["bob"])
    await a.join("general")
    await b.join("general")
    await asyncio.sleep(15)
    await a.post("general", "still there?")
    (msg,) = await b.messages("general", 1)
    assert msg["content"] == "still there?"
    assert (await b.request({"type": "ping"}, "pong"))["type"] == "pong"
    await a.close()
    await b.close()


# --- access -------------------------------------------------------------------------


async def test_a_private_room_refuses_a_non_member_on_every_frame(server, people):
    alice, _ = people["users"]
    room = await Room.objects.acreate(slug="secret", name="Secret", is_private=True)
    await Membership.objects.acreate(room=room, user=alice)
    b = await Ws.connect(server.ws, token=people["bob"])
    refusal = await b.join("secret")
    assert refusal == {"type": "error", "code": "NOT_FOUND", "message": "no room 'secret'"}
    sent = await b.post("secret", "let me in")
    assert sent["code"] == "NOT_FOUND"
    read = await b.request({"type": "read", "room": "secret", "seq": 1, "ref": "r"}, "error")
    assert read["code"] == "NOT_FOUND" and read["ref"] == "r"
    a = await Ws.connect(server.ws, token=people["alice"])
    await a.join("secret")
    await a.post("secret", "members only")
    assert not [f for f in await b.quiet(0.7) if f["type"] == "message"]
    assert (await b.request({"type": "ping"}, "pong"))["type"] == "pong"
    await a.close()
    await b.close()


async def test_an_unknown_room_is_not_found(server, people):
    b = await Ws.connect(server.ws, token=people["bob"])
    assert (await b.join("nowhere"))["code"] == "NOT_FOUND"
    await b.close()


async def test_typing_reaches_others_but_not_the_typist(server, people):
    a = await Ws.connect(server.ws, token=people["alice"])
    b = await Ws.connect(server.ws, token=people["bob"])
    await a.join("general")
    await b.join("general")
    await a.send({"type": "typing", "room": "general", "is_typing": True})
    frame = await b.recv_type("typing")
    assert frame == {
        "type": "typing",
        "room": "general",
        "user": {"id": frame["user"]["id"], "username": "alice"},
        "is_typing": True,
    }
    assert not [f for f in await a.quiet(0.5) if f["type"] == "typing"]
    await a.close()
    await b.close()


async def test_read_receipts_reach_the_room(server, people):
    a = await Ws.connect(server.ws, token=people["alice"])
    b = await Ws.connect(server.ws, token=people["bob"])
    await a.join("general")
    await b.join("general")
    await a.post("general", "read me")
    await b.send({"type": "read", "room": "general", "seq": 1})
    receipt = await a.recv_type("receipt")
    assert receipt["user"]["username"] == "bob" and receipt["seq"] == 1
    await a.close()
    await b.close()


async def test_presence_lists_joined_users_and_diffs_leaves(server, people):
    a = await Ws.connect(server.ws, token=people["alice"])
    await a.join("general")
    b = await Ws.connect(server.ws, token=people["bob"])
    joined = await b.join("general")
    assert {p["user"]["username"] for p in joined["presence"]} == {"alice", "bob"}
    diff = await a.recv_type("presence")
    assert [j["user"]["username"] for j in diff["joins"]] == ["bob"]
    await b.close()
    diff = await a.recv_type("presence")
    assert [lv["user"]["username"] for lv in diff["leaves"]] == ["bob"]
    await a.close()


# --- bad input -------------------------------------------------------------------------

BAD_FRAMES = [
    ("{not json", "BAD_REQUEST"),
    ("", "BAD_REQUEST"),
    ("[]", "BAD_REQUEST"),
    ("1", "BAD_REQUEST"),
    ('"x"', "BAD_REQUEST"),
    ("null", "BAD_REQUEST"),
    ("[" * 100_00 + "]" * 100_00, "BAD_REQUEST"),
    ('{"type": "join", "room": "general", "since": NaN}', "BAD_REQUEST"),
    ('{"type": "join", "room": "general", "since": 1e999}', "BAD_REQUEST"),
    ('{"type": "join", "room": "general", "since": ' + "9" * 5000 + "}", "BAD_REQUEST"),
    ('{"room": "general"}', "BAD_REQUEST"),
    ('{"type": 5}', "BAD_REQUEST"),
    ('{"type": "nope"}', "BAD_REQUEST"),
    ('{"type": "chat.message", "room_id": 1, "payload": {}}', "BAD_REQUEST"),
    ('{"type": "join"}', "BAD_REQUEST"),
    ('{"type": "join", "room": ["general"]}', "BAD_REQUEST"),
    ('{"type": "join", "room": "general", "since": -1}', "BAD_REQUEST"),
    ('{"type": "join", "room": "general", "since": "3"}', "BAD_REQUEST"),
    ('{"type": "join", "room": "nowhere"}', "NOT_FOUND"),
    ('{"type": "message", "room": "general", "content": "x"}', "BAD_REQUEST"),
    (
        '{"type": "message", "room": "general", "client_id": "not-a-uuid", "content": "x"}',
        "BAD_REQUEST",
    ),
    ('{"type": "message", "room": "general", "client_id": "%s"}' % uuid.uuid4(), "BAD_REQUEST"),
    (
        '{"type": "message", "room": "general", "client_id": "%s", "content": ""}' % uuid.uuid4(),
        "BAD_REQUEST",
    ),
    (
        '{"type": "message", "room": "general", "client_id": "%s", "content": {"a": 1}}'
        % uuid.uuid4(),
        "BAD_REQUEST",
    ),
    (
        '{"type": "message", "room": "general", "client_id": "%s", "content": "a\\u0000b"}'
        % uuid.uuid4(),
        "BAD_REQUEST",
    ),
    (
        '{"type": "message", "room": "general", "client_id": "%s", "content": "\\ud800"}'
        % uuid.uuid4(),
        "BAD_REQUEST",
    ),
    (
        json.dumps(
            {
                "type": "message",
                "room": "general",
                "client_id": str(uuid.uuid4()),
                "content": "x" * 4001,
            }
        ),
        "TOO_LARGE",
    ),
    ('{"type": "typing", "room": "general", "is_typing": "yes"}', "BAD_REQUEST"),
    ('{"type": "typing", "room": "random", "is_typing": true}', "BAD_REQUEST"),
    ('{"type": "read", "room": "general"}', "BAD_REQUEST"),
    ('{"type": "read", "room": "general", "seq": 1.5}', "BAD_REQUEST"),
    ('{"type": "presence", "status": "busy"}', "BAD_REQUEST"),
    ('{"type": "ping", "ref": {"nested": true}}', "BAD_REQUEST"),
]


async def test_every_kind_of_bad_input_gets_an_error_frame_and_the_connection_carries_on(
    server, people
):
    ws = await Ws.connect(server.ws, token=people["alice"])
    for raw, code in BAD_FRAMES:
        await ws.send(raw)
        frame = await ws.recv_type("error")
        assert frame["code"] == code, (raw[:80], frame)
        assert frame["message"]
    await ws.send(b"\x00\x01binary")
    assert (await ws.recv_type("error"))["code"] == "BAD_REQUEST"
    # still fully working afterwards
    assert (await ws.join("general"))["type"] == "joined"
    ack = await ws.post("general", "after all that")
    assert ack["type"] == "ack"
    assert (await ws.request({"type": "ping", "ref": 7}, "pong"))["ref"] == 7
    await ws.close()


async def test_an_error_echoes_the_ref_of_the_frame(server, people):
    ws = await Ws.connect(server.ws, token=people["alice"])
    frame = await ws.request({"type": "join", "room": "nowhere", "ref": "j-1"}, "error")
    assert frame["ref"] == "j-1"
    await ws.close()


async def test_a_frame_over_64_kib_closes_with_1009(protocol_server, people):
    ws = await Ws.connect(protocol_server.ws, token=people["alice"])
    await ws.send(json.dumps({"type": "ping", "pad": "x" * 65536}))
    with pytest.raises(websockets.exceptions.ConnectionClosed):
        await ws.recv(timeout=5)
    assert ws.conn.close_code == 1009


async def test_a_frame_just_under_64_kib_is_handled(protocol_server, people):
    ws = await Ws.connect(protocol_server.ws, token=people["alice"])
    frame = json.dumps({"type": "ping", "pad": ""})
    pad = 65536 - len(frame) - 2  # two-byte characters below: count bytes, not chars
    await ws.send(json.dumps({"type": "ping", "pad": "é" * (pad // 2)}, ensure_ascii=False))
    assert (await ws.recv())["type"] == "pong"
    await ws.close()


async def test_flooding_messages_gets_rate_limited_and_others_are_undisturbed(server, people):
    a = await Ws.connect(server.ws, token=people["alice"])
    b = await Ws.connect(server.ws, token=people["bob"])
    await b.join("general")
    for _ in range(25):
        await a.send(
            {
                "type": "message",
                "room": "general",
                "content": "spam",
                "client_id": str(uuid.uuid4()),
            }
        )
    frames = [await a.recv_type("ack", "error") for _ in range(25)]
    assert [f["type"] for f in frames].count("ack") == 20
    refusals = [f for f in frames if f["type"] == "error"]
    assert {f["code"] for f in refusals} == {"RATE_LIMITED"}
    assert all(0 < f["retry_after"] <= 10 and f["client_id"] for f in refusals)
    assert (await b.post("general", "bob is fine"))["type"] == "ack"
    assert (await a.request({"type": "ping"}, "pong"))["type"] == "pong"
    await a.close()
    await b.close()


async def test_typing_more_than_once_a_second_is_rate_limited(server, people):
    a = await Ws.connect(server.ws, token=people["alice"])
    await a.join("general")
    await a.send({"type": "typing", "room": "general", "is_typing": True})
    frame = await a.request({"type": "typing", "room": "general", "is_typing": True}, "error")
    assert frame["code"] == "RATE_LIMITED"
    await a.close()
