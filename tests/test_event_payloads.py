"""Every event type the apps put on the channel layer survives msgpack, as
channels_redis sends it: built by the real services and broadcast helpers,
carried by the msgpack-checking layer of the unit tests."""

import uuid

import pytest
from asgiref.sync import async_to_sync

from chat import events as chat_events
from chat import services
from django_realtime.payloads import user_payload
from notifications import events as notification_events
from notifications.services import notify
from presence import events as presence_events
from presence.store import Change, TypingLapse
from tests import msgpack_layer

EVERY_EVENT_TYPE = {
    chat_events.MESSAGE,
    chat_events.RECEIPT,
    presence_events.TYPING,
    chat_events.MESSAGE_DELETED,
    chat_events.KICKED,
    notification_events.NOTIFICATION,
    presence_events.DIFF,
}


@pytest.mark.django_db(transaction=True)
def test_every_event_type_survives_msgpack_unchanged(make_user, general):
    alice, bob = make_user("alice"), make_user("bob")
    moderator = make_user("mod", is_staff=True)
    msgpack_layer.seen.clear()
    services.room_join(user=bob, slug="general")
    sent = services.message_send(
        user=alice, slug="general", content="hello @bob", client_id=uuid.uuid4()
    )  # a message, and a mention notification
    services.read_mark(user=bob, slug="general", seq=sent.seq)
    async_to_sync(presence_events.broadcast_typing)(
        room_id=general.pk, room_slug="general", user=user_payload(bob), is_typing=True
    )
    async_to_sync(presence_events.broadcast_typing_lapse)(
        TypingLapse(room_id=general.pk, room_slug="general", user_id=bob.pk, username="bob")
    )
    services.message_delete(moderator=moderator, message_id=sent.id, reason="spam")
    services.member_ban(moderator=moderator, room=general, user=bob, reason="spam")
    notify(recipient=alice, kind="announcement", data={"text": "hi", "n": [1, 2]})
    async_to_sync(presence_events._send)(
        general.pk,
        "general",
        [Change(general.pk, alice.pk, "alice", "online", "general")],
        {"x": alice.pk},
    )
    assert msgpack_layer.failures == []
    assert EVERY_EVENT_TYPE <= msgpack_layer.seen


def test_a_payload_redis_would_mangle_is_caught():
    """The check itself: a tuple comes back from msgpack as a list."""
    with pytest.raises(TypeError, match="does not survive msgpack"):
        msgpack_layer.roundtrip("test", {"type": "x", "pair": (1, 2)})
    assert msgpack_layer.failures[-1][1] == "x"
    msgpack_layer.failures.clear()
