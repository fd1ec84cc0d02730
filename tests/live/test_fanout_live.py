"""
The room fan-out (chat/fanout.py) in real daphne processes on Redis: one
subscription per room per process whatever its number of members, every member
of a fresh process served from the first message, and nothing lost or repeated
for members who join a room while it is busy.
"""

import asyncio
import random
import uuid

import pytest
import redis
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.db import transaction

from chat.models import Message, Room
from django_realtime import bus

from .conftest import Ws

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

UNLIMITED = {"CHAT_MESSAGE_RATE": "off", "CHAT_JOIN_RATE": "off"}


@pytest.fixture
def crowd(make_user, token_for):
    """Thirty users with tokens, and the public rooms hall0, hall1, hall2."""
    tokens = [token_for(make_user(f"member{i}")) for i in range(30)]
    for r in range(3):
        Room.objects.create(slug=f"hall{r}", name=f"Hall {r}")
    return tokens


async def test_members_joining_a_fresh_process_at_once_all_get_every_message(
    daphnes, redis_url, crowd
):
    proc = daphnes(redis_url=redis_url, env=UNLIMITED)
    clients = await asyncio.gather(*(Ws.connect(proc.ws, token=token) for token in crowd))
    joined = await asyncio.gather(*(ws.join(f"hall{i % 3}") for i, ws in enumerate(clients)))
    assert [frame["type"] for frame in joined] == ["joined"] * len(clients)
    for r in range(3):
        for n in range(5):
            assert (await clients[r].post(f"hall{r}", f"message {n}"))["type"] == "ack"
    for i, ws in enumerate(clients):
        got = await ws.messages(f"hall{i % 3}", 5, timeout=10)
        assert [frame["seq"] for frame in got] == [1, 2, 3, 4, 5]
        assert [frame["content"] for frame in got] == [f"message {n}" for n in range(5)]
    for ws in clients:
        assert [f for f in await ws.quiet(0.2) if f["type"] == "message"] == []
        await ws.close()


async def test_a_process_subscribes_once_per_room_and_lets_go_after_the_last_member(
    daphnes, redis_url, crowd
):
    """What an operator sees in Redis: PUBSUB NUMSUB of the room's channel."""
    proc = daphnes(redis_url=redis_url, env=UNLIMITED)
    room = await sync_to_async(Room.objects.get)(slug="hall0")
    channel = f"asgi__group__{bus.room_group(room.pk)}"
    client = redis.Redis.from_url(redis_url)

    def subscriptions() -> int:
        return dict(client.pubsub_numsub(channel))[channel.encode()]

    members = [await Ws.connect(proc.ws, token=token) for token in crowd[:10]]
    for ws in members:
        assert (await ws.join("hall0"))["type"] == "joined"
    assert subscriptions() == 1
    for ws in members[:-1]:
        assert (await ws.request({"type": "leave", "room": "hall0"}, "left"))["type"] == "left"
    assert subscriptions() == 1
    await members[-1].request({"type": "leave", "room": "hall0"}, "left")
    assert subscriptions() == 0
    # Back again: subscribed again, and served.
    assert (await members[0].join("hall0"))["type"] == "joined"
    assert subscriptions() == 1
    await members[1].post("hall0", "welcome back")
    assert (await members[0].messages("hall0", 1))[0]["content"] == "welcome back"
    for ws in members:
        await ws.close()
    client.close()


async def test_members_joining_a_busy_room_get_every_later_message_once_in_order(
    daphnes, redis_url, crowd
):
    """Twenty members join at random moments while 200 messages are posted:
    each gets exactly the seqs after its `joined.last_seq`, in order."""
    proc = daphnes(redis_url=redis_url, env=UNLIMITED)
    total = 200
    poster = await Ws.connect(proc.ws, token=crowd[0])
    await poster.join("hall0")

    async def post_all() -> None:
        for n in range(total):
            assert (await poster.post("hall0", f"n{n}"))["type"] == "ack"

    async def member(token: str, delay: float) -> tuple[int, list[int]]:
        await asyncio.sleep(delay)
        ws = await Ws.connect(proc.ws, token=token)
        start = (await ws.join("hall0"))["last_seq"]
        got = await ws.messages("hall0", total - start, timeout=20) if start < total else []
        extra = [f for f in await ws.quiet(0.3) if f["type"] == "message"]
        await ws.close()
        return start, [frame["seq"] for frame in got + extra]

    posting = asyncio.create_task(post_all())
    results = await asyncio.gather(
        *(member(token, random.uniform(0.0, 0.6)) for token in crowd[1:21])
    )
    await posting
    for start, seqs in results:
        assert seqs == list(range(start + 1, total + 1))
    assert any(0 < start < total for start, _ in results)  # some joined mid-stream
    await poster.close()


def _store_silently(slug: str, content: str) -> None:
    """A message stored with no doorbell, as if the layer had dropped it."""
    room = Room.objects.select_for_update().get(slug=slug)
    Room.objects.filter(pk=room.pk).update(last_seq=room.last_seq + 1)
    Message.objects.create(
        room=room,
        seq=room.last_seq + 1,
        user=room.created_by or User.objects.first(),
        client_id=uuid.uuid4(),
        content=content,
    )


async def test_a_message_the_layer_never_announced_reaches_every_member_at_the_next_refresh(
    daphnes, redis_url, crowd
):
    proc = daphnes(redis_url=redis_url, env={**UNLIMITED, "GROUP_REFRESH_SECONDS": "1"})
    members = [await Ws.connect(proc.ws, token=token) for token in crowd[:6]]
    for i, ws in enumerate(members):
        assert (await ws.join(f"hall{i % 2}"))["type"] == "joined"
    for r in range(2):
        await sync_to_async(transaction.atomic(_store_silently))(f"hall{r}", f"silent {r}")
    for i, ws in enumerate(members):
        got = await ws.messages(f"hall{i % 2}", 1, timeout=5)
        assert [(f["seq"], f["content"]) for f in got] == [(1, f"silent {i % 2}")]
    for ws in members:
        assert [f for f in await ws.quiet(1.5) if f["type"] == "message"] == []
        await ws.close()
