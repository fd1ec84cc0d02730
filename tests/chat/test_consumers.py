"""The consumer on its own, through WebsocketCommunicator and the in-memory layer:
delivery order, gap filling and the frame allowlist."""

import asyncio
import json
import uuid

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from chat import events, services
from chat.consumers import RealtimeConsumer
from chat.models import Message, Room
from django_realtime import bus

pytestmark = pytest.mark.django_db(transaction=True)


async def connect(user) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(RealtimeConsumer.as_asgi(), "/ws/")
    communicator.scope["user"] = user
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def frames_until(communicator, type_, limit=50):
    seen = []
    for _ in range(limit):
        frame = await communicator.receive_json_from(timeout=5)
        seen.append(frame)
        if frame["type"] == type_:
            return seen
    raise AssertionError(f"no {type_} in {seen}")


def store_silently(room, user, n):
    """Messages stored without a doorbell, as if the layer had dropped them."""
    for _ in range(n):
        seq = Room.objects.get(pk=room.pk).last_seq + 1
        Message.objects.create(
            room=room, seq=seq, user=user, client_id=uuid.uuid4(), content=f"silent {seq}"
        )
        Room.objects.filter(pk=room.pk).update(last_seq=seq)


async def test_an_anonymous_connection_is_closed_with_4401():
    from django.contrib.auth.models import AnonymousUser

    communicator = WebsocketCommunicator(RealtimeConsumer.as_asgi(), "/ws/")
    communicator.scope["user"] = AnonymousUser()
    connected, _ = await communicator.connect()
    assert connected
    assert (await communicator.receive_output(timeout=2)) == {
        "type": "websocket.close",
        "code": 4401,
    }


async def test_a_lost_doorbell_is_filled_from_the_database(alice, bob, general):
    """Messages 1-3 were stored but their broadcast was lost; when 4 rings,
    the connection is sent 1, 2, 3 and 4, in order."""
    ws = await connect(bob)
    await ws.send_json_to({"type": "join", "room": "general"})
    assert (await ws.receive_json_from())["type"] == "joined"
    await sync_to_async(store_silently)(general, alice, 3)
    await sync_to_async(services.message_send)(
        user=alice, slug="general", content="four", client_id=str(uuid.uuid4())
    )
    got = [(await ws.receive_json_from(timeout=5)) for _ in range(4)]
    got = [f for f in got if f["type"] == "message"]
    assert [f["seq"] for f in got] == [1, 2, 3, 4]
    await ws.disconnect()


async def test_a_duplicate_doorbell_is_dropped(alice, bob, general):
    ws = await connect(bob)
    await ws.send_json_to({"type": "join", "room": "general"})
    await ws.receive_json_from()
    result = await sync_to_async(services.message_send)(
        user=alice, slug="general", content="once", client_id=str(uuid.uuid4())
    )
    assert (await ws.receive_json_from(timeout=5))["seq"] == 1
    await get_channel_layer().group_send(
        bus.room_group(general.pk),
        {"type": events.MESSAGE, "room_id": general.pk, "payload": result.payload},
    )
    await ws.send_json_to({"type": "ping"})
    assert (await ws.receive_json_from(timeout=5))["type"] == "pong"  # not the duplicate
    await ws.disconnect()


async def test_a_client_cannot_invoke_a_layer_handler_by_type(alice, general):
    ws = await connect(alice)
    await ws.send_json_to(
        {"type": "chat.kicked", "room_id": general.pk, "payload": {"type": "kicked"}}
    )
    frame = await ws.receive_json_from()
    assert frame["type"] == "error" and frame["code"] == "BAD_REQUEST"
    for name in ["chat_message", "websocket.disconnect", "presence.diff", "__init__"]:
        await ws.send_json_to({"type": name})
        assert (await ws.receive_json_from())["code"] == "BAD_REQUEST"
    await ws.disconnect()


async def test_join_since_beyond_the_end_still_gets_new_messages(alice, bob, general):
    ws = await connect(bob)
    await ws.send_json_to({"type": "join", "room": "general", "since": 500})
    joined = await ws.receive_json_from()
    assert joined["last_seq"] == 0
    await sync_to_async(services.message_send)(
        user=alice, slug="general", content="new", client_id=str(uuid.uuid4())
    )
    assert (await ws.receive_json_from(timeout=5))["seq"] == 1
    await ws.disconnect()


async def test_the_sender_gets_its_message_and_an_ack(alice, general):
    ws = await connect(alice)
    await ws.send_json_to({"type": "join", "room": "general"})
    await ws.receive_json_from()
    cid = str(uuid.uuid4())
    await ws.send_json_to(
        {"type": "message", "room": "general", "content": "hi", "client_id": cid, "ref": 1}
    )
    frames = await frames_until(ws, "ack")
    ack = frames[-1]
    assert ack == {
        "type": "ack",
        "room": "general",
        "client_id": cid,
        "id": ack["id"],
        "seq": 1,
        "ref": 1,
    }
    messages = [f for f in frames if f["type"] == "message"]
    assert [m["seq"] for m in messages] == [1]
    await ws.disconnect()


async def test_a_spoofed_user_field_is_ignored(alice, bob, general):
    ws = await connect(alice)
    await ws.send_json_to(
        {
            "type": "message",
            "room": "general",
            "content": "hi",
            "client_id": str(uuid.uuid4()),
            "user": {"id": bob.pk, "username": "bob"},
        }
    )
    await frames_until(ws, "ack")
    message = await Message.objects.select_related("user").aget()
    assert message.user.username == "alice"
    await ws.disconnect()


async def test_leave_stops_delivery(alice, bob, general):
    ws = await connect(bob)
    await ws.send_json_to({"type": "join", "room": "general"})
    await ws.receive_json_from()
    await ws.send_json_to({"type": "leave", "room": "general", "ref": "l"})
    assert await ws.receive_json_from() == {"type": "left", "room": "general", "ref": "l"}
    await sync_to_async(services.message_send)(
        user=alice, slug="general", content="gone", client_id=str(uuid.uuid4())
    )
    await ws.send_json_to({"type": "ping"})
    assert (await ws.receive_json_from(timeout=5))["type"] == "pong"
    await ws.disconnect()


@pytest.mark.parametrize("known", [False, True], ids=["first-join-here", "room-known-here"])
async def test_a_message_stored_while_a_join_reads_its_backlog_is_delivered_at_once(
    alice, bob, general, monkeypatch, known
):
    """The join has read where the backlog ends (last_seq 0) when alice
    posts: its own read of the last seq, or, for a room the process knows
    already, the join's statement (which read it) and its presence; the
    doorbell rings before the join has finished. bob gets the message right
    after `joined`, not at the next message or refresh."""
    from chat import streams
    from chat.fanout import fanout
    from presence import tracking

    async def alice_posts():
        await sync_to_async(services.message_send)(
            user=alice, slug="general", content="during the join", client_id=str(uuid.uuid4())
        )
        await asyncio.sleep(0.2)  # the doorbell reaches bob's fan-out meanwhile

    if known:
        fanout().know("general", general.pk)
        join = tracking.join

        async def join_while_alice_posts(**kwargs):
            present = await join(**kwargs)
            await alice_posts()
            return present

        monkeypatch.setattr(tracking, "join", join_while_alice_posts)
    else:
        fanout().forget("general")
        last_seq = streams.last_seq

        async def last_seq_while_alice_posts(**kwargs):
            seq = await last_seq(**kwargs)
            await alice_posts()
            return seq

        monkeypatch.setattr(streams, "last_seq", last_seq_while_alice_posts)
    ws = await connect(bob)
    await ws.send_json_to({"type": "join", "room": "general"})
    frames = await frames_until(ws, "message")
    assert frames[0]["type"] == "joined" and frames[0]["last_seq"] == 0
    assert (frames[-1]["seq"], frames[-1]["content"]) == (1, "during the join")
    await ws.disconnect()


async def test_doorbells_that_wait_for_the_lock_collapse_to_one_per_room_and_all_arrive():
    """While a connection's delivery lock is held (a replay waiting for its
    socket), a busy room's doorbells do not pile up: the connection holds
    one entry per room, and once the lock is free it is sent every message
    once, in order, the skipped ones read from the database."""

    from chat.delivery import JoinedRoom
    from django_realtime.delivery import Entry, SeqCursor

    stored = {seq: {"type": "message", "room": "busy", "seq": seq} for seq in range(1, 201)}

    async def fetch(after: int, until: int) -> list[Entry]:
        return [Entry(seq, stored[seq]) for seq in range(after + 1, until + 1)]

    consumer = RealtimeConsumer()
    sent: list[dict] = []

    async def base_send(message: dict) -> None:
        sent.append(message)

    consumer.base_send, consumer.scope, consumer.closing = base_send, {}, False
    consumer.start_output()  # no server to ask: output is never held
    consumer.waiting, consumer.joining = set(), {}
    consumer.queued, consumer.queued_message = [], {}
    consumer.delivery_lock = asyncio.Lock()
    consumer.joined = {7: JoinedRoom(room_id=7, slug="busy", cursor=SeqCursor(fetch=fetch))}

    async with consumer.delivery_lock:
        for seq in range(1, 201):
            payload = stored[seq]
            await consumer.fanout_message(7, seq, payload, "unused")
            await consumer.fanout_event({"type": "presence.typing", "room_id": 8, "payload": {}})
        assert len(consumer.queued) == 1 + 200  # one message entry, and the other events
        assert [e["type"] for e in consumer.queued].count(events.MESSAGE) == 1
        assert sent == []
    while consumer.waiting:
        await asyncio.gather(*consumer.waiting)
    seqs = [json.loads(m["text"])["seq"] for m in sent]
    assert seqs == list(range(1, 201))
    assert consumer.queued == []


async def test_a_replayed_message_is_the_same_frame_as_the_live_one(alice, bob, general):
    """A resume builds its frames from rows, not models: each must be the
    frame the live doorbell carried, field for field, a deleted one skipped."""
    ws = await connect(bob)
    await ws.send_json_to({"type": "join", "room": "general"})
    assert (await ws.receive_json_from())["type"] == "joined"
    for text in ("one", "two ü", "three"):
        await sync_to_async(services.message_send)(
            user=alice, slug="general", content=text, client_id=str(uuid.uuid4())
        )
    live = [await ws.receive_json_from(timeout=5) for _ in range(3)]
    await sync_to_async(Message.objects.filter(room=general, seq=2).update)(is_deleted=True)
    again = await connect(bob)
    await again.send_json_to({"type": "join", "room": "general", "since": 0})
    assert (await again.receive_json_from())["type"] == "joined"
    replayed = [await again.receive_json_from(timeout=5) for _ in range(2)]
    assert replayed == [live[0], live[2]]
    assert await again.receive_nothing(timeout=0.2)
    await ws.disconnect()
    await again.disconnect()


async def test_a_room_the_process_knows_is_subscribed_before_the_join_reads_its_end(
    alice, bob, general, monkeypatch
):
    """alice's join taught the process the room; bob's join subscribes first
    and its one statement reads where the backlog ends. A message alice
    posts right after that read reaches bob after `joined`, once."""
    first = await connect(alice)
    await first.send_json_to({"type": "join", "room": "general"})
    assert (await first.receive_json_from())["type"] == "joined"
    join = services.room_join_async

    async def join_then_alice_posts(**kwargs):
        room = await join(**kwargs)
        await sync_to_async(services.message_send)(
            user=alice, slug="general", content="right after", client_id=str(uuid.uuid4())
        )
        await asyncio.sleep(0.2)  # the doorbell reaches the fan-out meanwhile
        return room

    monkeypatch.setattr(services, "room_join_async", join_then_alice_posts)
    ws = await connect(bob)
    await ws.send_json_to({"type": "join", "room": "general"})
    frames = await frames_until(ws, "message")
    assert frames[0]["type"] == "joined" and frames[0]["last_seq"] == 0
    assert [(f["seq"], f["content"]) for f in frames[1:]] == [(1, "right after")]
    await ws.send_json_to({"type": "ping"})
    assert (await ws.receive_json_from(timeout=5))["type"] == "pong"  # not twice
    await ws.disconnect()
    await first.disconnect()


async def test_a_stranger_joining_a_private_room_the_process_knows_gets_nothing(alice, bob, secret):
    member = await connect(alice)
    await member.send_json_to({"type": "join", "room": "secret"})
    assert (await member.receive_json_from())["type"] == "joined"
    stranger = await connect(bob)
    await stranger.send_json_to({"type": "join", "room": "secret", "ref": 1})
    refused = await stranger.receive_json_from()
    assert (refused["type"], refused["code"], refused["ref"]) == ("error", "NOT_FOUND", 1)
    await sync_to_async(services.message_send)(
        user=alice, slug="secret", content="members only", client_id=str(uuid.uuid4())
    )
    assert (await member.receive_json_from(timeout=5))["content"] == "members only"
    await stranger.send_json_to({"type": "ping"})
    assert (await stranger.receive_json_from(timeout=5))["type"] == "pong"  # nothing before it
    await stranger.disconnect()
    await member.disconnect()


async def test_a_slug_that_now_names_another_room_joins_the_new_one(alice, bob):
    old = await sync_to_async(services.room_create)(user=alice, slug="r1", name="Old")
    first = await connect(alice)
    await first.send_json_to({"type": "join", "room": "r1"})
    assert (await first.receive_json_from())["type"] == "joined"
    await first.send_json_to({"type": "leave", "room": "r1"})
    assert (await first.receive_json_from())["type"] == "left"
    await sync_to_async(Room.objects.filter(pk=old.pk).delete)()
    new = await sync_to_async(services.room_create)(user=alice, slug="r1", name="New")
    assert new.pk != old.pk
    ws = await connect(bob)
    await ws.send_json_to({"type": "join", "room": "r1"})
    assert (await ws.receive_json_from())["type"] == "joined"
    await sync_to_async(services.message_send)(
        user=alice, slug="r1", content="in the new room", client_id=str(uuid.uuid4())
    )
    got = await ws.receive_json_from(timeout=5)
    assert (got["seq"], got["content"]) == (1, "in the new room")
    await ws.disconnect()
    await first.disconnect()
