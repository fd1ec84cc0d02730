"""The chat services on their own: sequencing, idempotency, access and limits."""

import threading
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat import services
from chat.models import Membership, Message
from django_realtime.errors import BadRequest, Forbidden, NotFound, RateLimited, TooLarge


@pytest.fixture(autouse=True, params=["one statement", "general path"])
def send_path(request, monkeypatch):
    """Every test here runs on both ways message_send stores a message on
    PostgreSQL: the one-statement common case and the general ORM path (taken
    for mentions, and on other databases)."""
    if request.param == "general path":
        monkeypatch.setattr("chat.services.messages.one_statement_applies", lambda content: False)
    return request.param


def send(user, slug="general", content="hi", client_id=None):
    return services.message_send(
        user=user, slug=slug, content=content, client_id=client_id or str(uuid.uuid4())
    )


def test_seqs_are_gap_free_per_room(alice, general, db):
    """Each room numbers its messages 1, 2, 3 … on its own."""
    other = services.room_create(user=alice, slug="other", name="Other")
    seqs = [send(alice).seq for _ in range(3)]
    assert seqs == [1, 2, 3]
    assert send(alice, slug=other.slug).seq == 1
    general.refresh_from_db()
    assert general.last_seq == 3


def test_a_retry_with_the_same_client_id_stores_nothing_new(alice, general):
    """The retry returns the original id and seq; one row exists."""
    cid = str(uuid.uuid4())
    first = send(alice, client_id=cid, content="once")
    again = send(alice, client_id=cid, content="once")
    assert first.created and not again.created
    assert (again.id, again.seq) == (first.id, first.seq)
    assert Message.objects.filter(client_id=cid).count() == 1
    general.refresh_from_db()
    assert general.last_seq == 1


def test_a_client_id_is_per_user(alice, bob, general):
    """Two users may pick the same client_id; each gets their own message."""
    cid = str(uuid.uuid4())
    assert send(alice, client_id=cid).created
    assert send(bob, client_id=cid).created


def test_a_client_id_reused_in_another_room_is_refused(alice, general):
    services.room_create(user=alice, slug="other", name="Other")
    cid = str(uuid.uuid4())
    send(alice, client_id=cid)
    with pytest.raises(BadRequest, match="another room"):
        send(alice, slug="other", client_id=cid)


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("", BadRequest),
        ("   ", BadRequest),
        (42, BadRequest),
        (None, BadRequest),
        ("a\x00b", BadRequest),
        ("\ud800", BadRequest),
        ("x" * 4001, TooLarge),
    ],
)
def test_bad_content_is_refused_with_a_reason(alice, general, content, error):
    with pytest.raises(error):
        send(alice, content=content)
    assert not Message.objects.exists()


def test_content_at_the_limit_is_stored_verbatim(alice, general):
    text = "é" * 3999 + "<"
    assert send(alice, content=text).payload["content"] == text


@pytest.mark.parametrize("client_id", ["nope", 12, "", None, "x" * 100])
def test_a_client_id_must_be_a_uuid(alice, general, client_id):
    with pytest.raises(BadRequest):
        services.message_send(user=alice, slug="general", content="hi", client_id=client_id)


def test_unknown_room_is_not_found(alice, db):
    with pytest.raises(NotFound):
        send(alice, slug="nowhere")


def test_a_private_room_does_not_exist_for_non_members(bob, secret):
    """A non-member can neither post to nor join a private room, and is told
    what a slug of no room gets."""
    with pytest.raises(NotFound, match="^no room 'secret'$"):
        send(bob, slug="secret")
    with pytest.raises(NotFound, match="^no room 'secret'$"):
        services.room_join(user=bob, slug="secret")


def test_an_invited_user_may_post_in_a_private_room(alice, bob, secret):
    services.member_invite(inviter=alice, slug="secret", username="bob")
    assert send(bob, slug="secret").created


def test_only_members_or_staff_may_invite(bob, carol, secret, make_user):
    with pytest.raises(NotFound):  # to bob, not a member, the room does not exist
        services.member_invite(inviter=bob, slug="secret", username="carol")
    staff = make_user("mod", is_staff=True)
    services.member_invite(inviter=staff, slug="secret", username="carol")
    assert Membership.objects.filter(room=secret, user=carol).exists()


def test_inviting_an_unknown_user_is_not_found(alice, secret):
    with pytest.raises(NotFound):
        services.member_invite(inviter=alice, slug="secret", username="ghost")


def test_banned_users_may_not_read_or_post(alice, bob, general):
    Membership.objects.create(room=general, user=bob, is_banned=True)
    with pytest.raises(Forbidden, match="banned"):
        send(bob)
    with pytest.raises(Forbidden):
        services.room_join(user=bob, slug="general")


def test_muted_members_may_read_but_not_post(bob, general):
    Membership.objects.create(room=general, user=bob, is_muted=True)
    services.room_join(user=bob, slug="general")
    with pytest.raises(Forbidden, match="muted"):
        send(bob)


def test_posting_joins_a_public_room_and_marks_it_read(bob, general):
    result = send(bob)
    membership = Membership.objects.get(room=general, user=bob)
    assert membership.last_read_seq == result.seq


def test_the_message_rate_limit_refuses_the_21st_message(alice, general, realtime):
    realtime.CHAT_MESSAGE_RATE = "20/10s"
    for _ in range(20):
        send(alice)
    with pytest.raises(RateLimited):
        send(alice)
    assert Message.objects.count() == 20


def test_rate_limit_off_disables_it(alice, general, realtime):
    realtime.CHAT_MESSAGE_RATE = "off"
    for _ in range(25):
        send(alice)
    assert Message.objects.count() == 25


def test_read_position_never_moves_back_and_is_clamped(alice, general):
    for _ in range(3):
        send(alice)
    assert services.read_mark(user=alice, slug="general", seq=1) == 3  # posting read it already
    assert services.read_mark(user=alice, slug="general", seq=999) == 3
    with pytest.raises(BadRequest):
        services.read_mark(user=alice, slug="general", seq=-1)
    with pytest.raises(BadRequest):
        services.read_mark(user=alice, slug="general", seq=True)


def test_room_create_validates_and_refuses_duplicates(alice, db):
    services.room_create(user=alice, slug="team-1", name="Team")
    with pytest.raises(BadRequest, match="exists"):
        services.room_create(user=alice, slug="team-1", name="Again")
    for slug in ["", "has space", "x" * 65, "émoji😀", None]:
        with pytest.raises(BadRequest):
            services.room_create(user=alice, slug=slug, name="N")
    with pytest.raises(BadRequest):
        services.room_create(user=alice, slug="ok", name="")


@pytest.mark.django_db(transaction=True)
def test_concurrent_senders_get_distinct_gap_free_seqs(make_user):
    """Eight threads posting at once: seqs 1..N, no gap, no twin."""
    users = [make_user(f"u{i}") for i in range(8)]
    services.room_create(user=users[0], slug="busy", name="Busy")
    errors = []

    def post(user):
        try:
            for _ in range(10):
                send(user, slug="busy")
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=post, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    seqs = sorted(Message.objects.filter(room__slug="busy").values_list("seq", flat=True))
    assert seqs == list(range(1, 81))


@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_of_one_client_id_store_one_message(alice):
    """Racing retries of one send: one row, and every caller gets its id."""
    services.room_create(user=alice, slug="race", name="Race")
    cid = str(uuid.uuid4())
    results, errors = [], []

    def post():
        try:
            results.append(send(alice, slug="race", client_id=cid).id)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(results)) == 1 and len(results) == 6
    assert Message.objects.filter(client_id=cid).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_plain_message_is_stored_in_one_round_trip(alice, general, send_path):
    """The access rule, the seq, the row and the read position: one statement,
    its own transaction."""
    send(alice)  # alice is a member from now on
    with CaptureQueriesContext(connection) as queries:
        result = send(alice, content="plain")
    assert result.created and result.seq == 2
    # The general path: SELECT, BEGIN, UPDATE, INSERT, UPDATE, COMMIT.
    assert len(queries) == (1 if send_path == "one statement" else 6)
    assert Membership.objects.get(room=general, user=alice).last_read_seq == 2


def test_a_rate_limited_sender_is_refused_the_same_on_both_paths(alice, general, realtime):
    """A message with a mention (general path) and one without (one
    statement) count against the same limit."""
    realtime.CHAT_MESSAGE_RATE = "2/10s"
    send(alice, content="one")
    send(alice, content="two @bob")
    with pytest.raises(RateLimited):
        send(alice, content="three")
