"""chat.services.batches: posts that arrive while the process's previous post
statement is in flight are stored by one statement, each with its own seq,
idempotency and refusal, and one doorbell rings per room for them."""

import asyncio
import uuid

import psycopg
import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connections
from prometheus_client import REGISTRY

from chat import events, services
from chat.models import Membership, Message, Room
from django_realtime import bus
from django_realtime.errors import Forbidden, NotFound

pytestmark = pytest.mark.django_db(transaction=True)


def send(user, slug="general", content="hi", client_id=None):
    return services.message_send_async(
        user=user, slug=slug, content=content, client_id=client_id or str(uuid.uuid4())
    )


def batched_posts() -> float:
    """Posts stored in a statement with others, so far."""
    total = REGISTRY.get_sample_value("realtime_post_batch_size_sum") or 0.0
    alone = REGISTRY.get_sample_value("realtime_post_batch_size_bucket", {"le": "1.0"}) or 0.0
    return total - alone


async def outcome(post):
    try:
        return await post
    except Exception as exc:  # noqa: BLE001 - the answer under test
        return exc


async def stored() -> list[tuple]:
    return await sync_to_async(list)(
        Message.objects.order_by("room__slug", "seq").values_list(
            "room__slug", "seq", "content", "pk"
        )
    )


async def test_concurrent_posts_are_stored_together_each_in_its_place(alice, bob, general):
    other = await sync_to_async(Room.objects.create)(slug="other", name="Other")
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(bus.room_group(general.pk), channel)
    before = batched_posts()

    posts = [(alice if i % 2 else bob, "general" if i % 3 else "other", f"m{i}") for i in range(30)]
    results = await asyncio.gather(*(send(u, slug, text) for u, slug, text in posts))

    assert batched_posts() - before >= 20, "concurrent posts went one statement each"
    assert all(r.created for r in results)
    rows = await stored()
    by_content = {content: (slug, seq, pk) for slug, seq, content, pk in rows}
    for (_, slug, text), result in zip(posts, results, strict=True):
        assert by_content[text] == (slug, result.seq, result.id)
        assert result.payload["content"] == text and result.payload["seq"] == result.seq
    for room in ("general", "other"):  # each room's seqs gap-free, in arrival order
        seqs = [seq for slug, seq, _, _ in rows if slug == room]
        assert seqs == list(range(1, len(seqs) + 1))
        arrived = [r.seq for (_, slug, _), r in zip(posts, results, strict=True) if slug == room]
        assert arrived == sorted(arrived)
    await sync_to_async(general.refresh_from_db)()
    await sync_to_async(other.refresh_from_db)()
    assert (general.last_seq, other.last_seq) == (20, 10)
    read = await sync_to_async(dict)(
        Membership.objects.filter(room=general).values_list("user__username", "last_read_seq")
    )
    assert read == {
        name: max(
            r.seq
            for (u, s, _), r in zip(posts, results, strict=True)
            if s == "general" and u.username == name
        )
        for name in ("alice", "bob")
    }

    # Each message rang once, in seq order, in fewer doorbells than messages.
    rung: list[dict] = []
    doorbells = 0
    while len(rung) < 20:
        event = await asyncio.wait_for(layer.receive(channel), 5)
        doorbells += 1
        rung += events.message_payloads(event)
    assert [p["seq"] for p in rung] == list(range(1, 21))
    assert doorbells < 20


async def test_each_post_of_a_batch_gets_its_own_refusal(alice, bob, general, secret):
    await sync_to_async(Membership.objects.create)(room=general, user=bob, is_muted=True)
    before = batched_posts()
    answers = await asyncio.gather(
        outcome(send(alice, content="lead")),  # alone: the others queue behind it
        outcome(send(bob, content="muted")),
        outcome(send(alice, slug="nowhere")),
        outcome(send(bob, slug=secret.slug)),
        outcome(send(alice, content="fine")),
        outcome(send(alice, slug=secret.slug, content="mine")),
    )
    assert batched_posts() - before == 5
    lead, muted, nowhere, stranger, fine, mine = answers
    assert isinstance(muted, Forbidden) and "muted" in muted.message
    assert isinstance(nowhere, NotFound)
    assert isinstance(stranger, NotFound)  # a private room is not there for a stranger
    assert (lead.seq, fine.seq, mine.seq) == (1, 2, 1)
    assert [(s, c) for s, _, c, _ in [(r[0], r[1], r[2], r[3]) for r in await stored()]] == [
        ("general", "lead"),
        ("general", "fine"),
        (secret.slug, "mine"),
    ]


async def test_a_retry_in_the_same_batch_is_stored_once(alice, general):
    cid = str(uuid.uuid4())
    lead, first, again = await asyncio.gather(
        send(alice, content="lead"), send(alice, client_id=cid), send(alice, client_id=cid)
    )
    assert (first.created, again.created) == (True, False)
    assert (again.id, again.seq) == (first.id, first.seq) == (first.id, 2)
    assert await sync_to_async(Message.objects.count)() == 2


async def test_a_batch_that_fails_stores_nothing_and_each_post_is_answered_alone(alice, general):
    """A racing twin of one post commits its client_id while the batch waits:
    the batch's statement fails whole, each post then goes alone; what is
    stored is exactly what was acked."""
    side = await sync_to_async(Room.objects.create)(slug="side", name="Side")
    cid = uuid.uuid4()
    twin = await twin_connection()
    async with twin.transaction():
        async with twin.cursor() as cursor:
            await cursor.execute(
                "UPDATE chat_room SET last_seq = last_seq + 1 WHERE id = %s", [side.pk]
            )
            await cursor.execute(
                "INSERT INTO chat_message (room_id, seq, user_id, client_id, content,"
                " created_at, is_deleted) VALUES (%s, 1, %s, %s, 'twin', now(), false)"
                " RETURNING id",
                [side.pk, alice.pk, cid],
            )
            (twin_id,) = await cursor.fetchone()
        split = REGISTRY.get_sample_value("realtime_post_batches_split_total") or 0.0
        posts = asyncio.gather(
            send(alice, content="lead"),
            send(alice, content="a"),
            send(alice, slug="side", client_id=str(cid), content="retry"),
            send(alice, content="b"),
        )
        await waiting_on(twin)  # the batch waits for the twin's room lock
    lead, a, retry, b = await posts
    await twin.close()

    assert REGISTRY.get_sample_value("realtime_post_batches_split_total") == split + 1
    assert (lead.seq, a.seq, b.seq) == (1, 2, 3) and lead.created and a.created and b.created
    assert (retry.created, retry.id, retry.seq) == (False, twin_id, 1)
    assert [(slug, seq, content) for slug, seq, content, _ in await stored()] == [
        ("general", 1, "lead"),
        ("general", 2, "a"),
        ("general", 3, "b"),
        ("side", 1, "twin"),
    ]


async def twin_connection() -> psycopg.AsyncConnection:
    params = connections["default"].get_connection_params()
    for name in ("cursor_factory", "context"):
        params.pop(name, None)
    return await psycopg.AsyncConnection.connect(**params)


async def waiting_on(twin: psycopg.AsyncConnection) -> None:
    """Until a statement waits for a lock `twin` holds."""
    watcher = await twin_connection()
    try:
        async with asyncio.timeout(30):
            while True:
                cursor = await watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                    [twin.info.backend_pid],
                )
                if (await cursor.fetchone())[0]:
                    return
                await asyncio.sleep(0.02)
    finally:
        await watcher.close()
