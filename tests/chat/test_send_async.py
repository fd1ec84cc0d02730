"""chat.services.message_send_async: the WebSocket's post, the twin of
message_send with the statement run on the event loop (django_realtime.pgpool), and the
same answers."""

import uuid

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from chat import services
from chat.models import Membership, Message
from django_realtime import bus, pgpool
from django_realtime.errors import BadRequest, Forbidden, NotFound

pytestmark = pytest.mark.django_db(transaction=True)


async def send(user, slug="general", content="hi", client_id=None):
    return await services.message_send_async(
        user=user, slug=slug, content=content, client_id=client_id or str(uuid.uuid4())
    )


async def test_a_message_is_stored_sequenced_and_rung_once(alice, general):
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(bus.room_group(general.pk), channel)
    first, second = await send(alice, content="one"), await send(alice, content="two")
    assert (first.created, first.seq, second.seq) == (True, 1, 2)
    stored = await sync_to_async(list)(
        Message.objects.filter(room=general).values_list("seq", "content")
    )
    assert stored == [(1, "one"), (2, "two")]
    rung = [await layer.receive(channel), await layer.receive(channel)]
    assert [event["payload"] for event in rung] == [first.payload, second.payload]
    membership = await sync_to_async(Membership.objects.get)(room=general, user=alice)
    assert membership.last_read_seq == 2


async def test_a_retry_returns_the_original_and_stores_nothing(alice, general):
    cid = str(uuid.uuid4())
    first = await send(alice, client_id=cid, content="once")
    again = await send(alice, client_id=cid, content="once")
    assert not again.created and again.id == first.id
    assert await sync_to_async(Message.objects.count)() == 1


async def test_refusals_say_what_the_service_says(alice, bob, general):
    await sync_to_async(Membership.objects.create)(room=general, user=bob, is_muted=True)
    with pytest.raises(Forbidden, match="muted"):
        await send(bob)
    with pytest.raises(NotFound):
        await send(alice, slug="nowhere")
    with pytest.raises(BadRequest):
        await send(alice, content="   ")
    assert await sync_to_async(Message.objects.count)() == 0


async def test_a_mention_takes_the_general_path_and_notifies(alice, bob, general):
    result = await send(alice, content="hello @bob")
    assert result.created and result.seq == 1
    assert await sync_to_async(bob.realtime_notifications.count)() == 1


async def test_the_general_path_when_the_one_statement_is_off(alice, general, monkeypatch):
    monkeypatch.setattr("chat.services.messages.one_statement_applies", lambda content: False)
    assert (await send(alice)).seq == 1


PREPARED_SENDS = (
    "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%%WITH access AS%%'"
    " AND statement NOT LIKE '%%pg_prepared_statements%%'"  # this query, prepared too
)


@pytest.mark.parametrize("prepared", [True, False])
async def test_the_post_is_planned_once_per_connection_unless_turned_off(
    alice, general, settings, prepared
):
    settings.REALTIME = {**settings.REALTIME, "DATABASE_PREPARED_STATEMENTS": prepared}
    await send(alice, content="one")
    await send(alice, content="two")
    # The same connection served both posts (one at a time, the idle one reused).
    (count,) = await pgpool.fetchone("default", PREPARED_SENDS, {})
    assert count == (1 if prepared else 0)
