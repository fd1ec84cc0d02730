"""The notification services on their own: what is stored, who is notified of a
mention, what a user's connections are sent, and what it costs in queries."""

import uuid

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.core.management import call_command
from django.core.management.base import CommandError

from chat import mentions
from chat import selectors as chat_selectors
from chat import services as chat_services
from chat.models import Membership, Message, Room
from django_realtime import bus
from django_realtime.errors import ClientError, NotFound
from django_realtime.payloads import iso
from notifications import services
from notifications.models import Notification


def send(user, content, slug="general", client_id=None):
    return chat_services.message_send(
        user=user, slug=slug, content=content, client_id=client_id or str(uuid.uuid4())
    )


def mentions_of(user):
    return list(Notification.objects.filter(recipient=user, kind="mention"))


# --- notify -------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_notify_pushes_the_notification_frame_to_the_users_group_after_commit(make_user):
    """Every connection of the recipient is in its user group; the frame is
    the contract's `notification` frame, JSON-able, and says it is unread."""
    bob = await sync_to_async(make_user)("bob")
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(bus.user_group(bob.pk), channel)
    stored = await sync_to_async(services.notify)(
        recipient=bob, kind="announcement", data={"text": "hello"}
    )
    event = await layer.receive(channel)
    assert event["type"] == "notify.notification"
    assert event["payload"] == {
        "type": "notification",
        "notification": {
            "id": stored.pk,
            "kind": "announcement",
            "data": {"text": "hello"},
            "created_at": iso(stored.created_at),
            "read": False,
        },
    }
    assert event["payload"]["notification"]["created_at"].endswith("Z")


def test_notify_pushes_only_once_the_transaction_commits(bob, django_capture_on_commit_callbacks):
    """Nothing goes to the layer inline: one push waits for the commit, so a
    rolled-back notification is never seen."""
    with django_capture_on_commit_callbacks() as callbacks:
        services.notify(recipient=bob, kind="announcement", data={"text": "x"})
    assert len(callbacks) == 1


def test_notify_many_stores_one_row_per_distinct_recipient(
    alice, bob, carol, django_assert_num_queries
):
    """Savepoint, the recipients' lock, one insert, release: the same for 3 or 300."""
    with django_assert_num_queries(4):
        rows = services.notify_many(
            recipients=[alice, bob, carol, bob], kind="announcement", data={"text": "hi"}
        )
    assert sorted(n.recipient_id for n in rows) == sorted([alice.pk, bob.pk, carol.pk])
    assert Notification.objects.filter(kind="announcement").count() == 3


@pytest.mark.parametrize("kind", ["", "x" * 33, None])
def test_a_bad_kind_is_refused(bob, kind):
    with pytest.raises(ClientError):
        services.notify(recipient=bob, kind=kind, data={})
    assert not Notification.objects.exists()


# --- mentions ---------------------------------------------------------------------------


def test_a_mention_notifies_the_named_user_with_room_message_and_excerpt(alice, bob, general):
    long = "@bob look at this: " + "x" * 300
    message = send(alice, long)
    (notification,) = mentions_of(bob)
    assert notification.data == {
        "room": "general",
        "message_id": message.id,
        "seq": message.seq,
        "from": {"id": alice.pk, "username": "alice"},
        "excerpt": long[:200],
    }
    assert notification.read_at is None


def test_a_private_room_non_member_is_not_notified(alice, bob, carol, secret):
    Membership.objects.create(room=secret, user=carol)
    send(alice, "@bob @carol secret plans", slug="secret")
    assert mentions_of(bob) == []
    assert len(mentions_of(carol)) == 1


def test_a_banned_user_is_not_notified(alice, bob, carol, general):
    Membership.objects.create(room=general, user=bob, is_banned=True)
    send(alice, "@bob @carol hello")
    assert mentions_of(bob) == []
    assert len(mentions_of(carol)) == 1


def test_a_public_room_notifies_users_who_never_joined_it(alice, bob, general):
    assert not Membership.objects.filter(room=general, user=bob).exists()
    send(alice, "hey @bob")
    assert len(mentions_of(bob)) == 1


def test_the_author_is_not_notified_of_their_own_mention(alice, general):
    send(alice, "note to self @alice")
    assert mentions_of(alice) == []


def test_a_user_mentioned_twice_in_one_message_is_notified_once(alice, bob, general):
    send(alice, "@bob @bob, @bob. really, @bob!")
    assert len(mentions_of(bob)) == 1


def test_a_retried_send_notifies_nobody_again(alice, bob, general):
    cid = str(uuid.uuid4())
    first = send(alice, "@bob once", client_id=cid)
    again = send(alice, "@bob once", client_id=cid)
    assert first.created and not again.created
    assert len(mentions_of(bob)) == 1


def test_a_refused_send_notifies_nobody(alice, bob, general):
    Membership.objects.create(room=general, user=alice, is_muted=True)
    with pytest.raises(ClientError):
        send(alice, "@bob muted")
    assert mentions_of(bob) == []


@pytest.mark.parametrize(
    "content",
    [
        "mail bob@example.com",
        "@nobody here",
        "@ bob",
        "@@bob",
        "x@bob",
        "@BOB is not bob",
    ],
)
def test_text_that_is_not_a_mention_of_bob_notifies_nobody(alice, bob, general, content):
    send(alice, content)
    assert not Notification.objects.exists()


@pytest.mark.parametrize("content", ["@bob", "(@bob)", "hi @bob, there", "@bob.", "@bob: hi"])
def test_a_mention_may_be_followed_by_punctuation(alice, bob, general, content):
    send(alice, content)
    assert len(mentions_of(bob)) == 1


def test_an_inactive_user_is_not_notified(alice, bob, general):
    bob.is_active = False
    bob.save()
    send(alice, "@bob")
    assert mentions_of(bob) == []


def test_mentions_cost_three_queries_whatever_the_number_named(
    alice, general, make_user, django_assert_num_queries
):
    """Names (locking those users), their memberships, one insert."""
    for i in range(5):
        make_user(f"user{i}")
    message = Message.objects.create(
        room=general,
        seq=1,
        user=alice,
        client_id=uuid.uuid4(),
        content=" ".join(f"@user{i}" for i in range(5)) + " @ghost",
    )
    with django_assert_num_queries(3):
        rows = mentions.mentions_notify(message=message, room=general)
    assert len(rows) == 5


def test_a_message_without_mentions_costs_no_query(alice, general, django_assert_num_queries):
    message = Message.objects.create(
        room=general, seq=1, user=alice, client_id=uuid.uuid4(), content="no names here"
    )
    with django_assert_num_queries(0):
        assert mentions.mentions_notify(message=message, room=general) == []


@pytest.mark.parametrize("is_private", [False, True])
@pytest.mark.parametrize("membership", [None, "member", "banned", "muted"])
def test_the_bulk_access_rule_agrees_with_room_access(make_user, is_private, membership):
    """users_who_may_read is room_access for many users at once."""
    user = make_user("someone")
    room = Room.objects.create(slug="r", name="R", is_private=is_private)
    if membership is not None:
        Membership.objects.create(
            room=room,
            user=user,
            is_banned=membership == "banned",
            is_muted=membership == "muted",
        )
    try:
        chat_selectors.room_access(user=user, room=room)
        allowed = True
    except ClientError:
        allowed = False
    assert (user.pk in chat_selectors.users_who_may_read(room=room, user_ids=[user.pk])) is allowed


# --- marking read ---------------------------------------------------------------------


def test_marking_read_is_per_user(alice, bob):
    mine = services.notify(recipient=bob, kind="announcement", data={})
    with pytest.raises(NotFound):
        services.notification_mark_read(user=alice, notification_id=mine.pk)
    assert services.notification_mark_read(user=bob, notification_id=mine.pk).read_at
    mine.refresh_from_db()
    first_read = mine.read_at
    services.notification_mark_read(user=bob, notification_id=mine.pk)
    mine.refresh_from_db()
    assert mine.read_at == first_read  # marking again keeps the first time


@pytest.mark.parametrize("notification_id", [0, -1, 2**63, "1", None, True])
def test_marking_a_nonsense_id_is_not_found(bob, notification_id):
    with pytest.raises(NotFound):
        services.notification_mark_read(user=bob, notification_id=notification_id)


def test_mark_all_read_touches_only_the_users_unread(alice, bob):
    for _ in range(3):
        services.notify(recipient=bob, kind="announcement", data={})
    services.notify(recipient=alice, kind="announcement", data={})
    assert services.notifications_mark_all_read(user=bob) == 3
    assert services.notifications_mark_all_read(user=bob) == 0
    assert Notification.objects.filter(recipient=alice, read_at__isnull=True).count() == 1


# --- the management command ---------------------------------------------------------------


def test_the_notify_command_announces_to_the_named_users(alice, bob, carol, capsys):
    call_command("notify", "bob", "carol", "--text", "maintenance at noon", "--from", "alice")
    rows = Notification.objects.order_by("recipient_id")
    assert [n.recipient_id for n in rows] == sorted([bob.pk, carol.pk])
    assert rows[0].kind == "announcement"
    assert rows[0].data == {
        "text": "maintenance at noon",
        "from": {"id": alice.pk, "username": "alice"},
    }


def test_the_notify_command_refuses_unknown_users(bob):
    with pytest.raises(CommandError, match="ghost"):
        call_command("notify", "bob", "ghost", "--text", "x")
    assert not Notification.objects.exists()
