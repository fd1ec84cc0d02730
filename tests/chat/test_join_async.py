"""The WebSocket's join and handshake reads from the event loop: on
PostgreSQL one statement each over django_realtime.pgpool (chat.services'
JOIN_SQL, chat.streams' last seq, django_realtime.tokens' token lookup),
elsewhere the ORM in a thread. Both give the answers the synchronous
services give, word for word."""

import itertools
import uuid

import pytest
from asgiref.sync import sync_to_async
from rest_framework.authtoken.models import Token

from chat import services, streams
from chat.models import Membership, Message, Room
from django_realtime import pgpool
from django_realtime.errors import ClientError, NotFound
from django_realtime.tokens import token_user, token_user_async

pytestmark = pytest.mark.django_db(transaction=True)

MEMBERSHIPS = {
    "none": None,
    "member": {},
    "muted": {"is_muted": True},
    "banned": {"is_banned": True},
    "moderator": {"role": Membership.Role.MODERATOR},
}
CASES = list(itertools.product([False, True], MEMBERSHIPS))


@pytest.fixture(params=["one statement", "ORM in a thread"])
def path(request, monkeypatch):
    if request.param == "ORM in a thread":
        monkeypatch.setattr(pgpool, "applies", lambda alias: False)
    return request.param


async def outcome(call):
    try:
        return ("ok", await call())
    except ClientError as exc:
        return (exc.code, exc.message)


def memberships(user):
    return list(
        Membership.objects.filter(user=user)
        .order_by("room__slug")
        .values_list("room__slug", "role", "is_banned", "is_muted", "last_read_seq")
    )


@pytest.mark.parametrize(("is_private", "membership"), CASES)
async def test_the_join_answers_as_room_join_does(django_user_model, path, is_private, membership):
    """Each case twice: once through room_join (the ORM, synchronous) for a
    user, once through room_join_async for another in the same place."""
    owner = await sync_to_async(django_user_model.objects.create_user)(username="owner")
    room = await sync_to_async(services.room_create)(
        user=owner, slug="r", name="R", is_private=is_private
    )
    await sync_to_async(Room.objects.filter(pk=room.pk).update)(last_seq=7)
    users = []
    for name in ("by-orm", "by-join"):
        user = await sync_to_async(django_user_model.objects.create_user)(username=name)
        if MEMBERSHIPS[membership] is not None:
            await sync_to_async(Membership.objects.create)(
                room=room, user=user, **MEMBERSHIPS[membership]
            )
        users.append(user)

    expected = await outcome(lambda: sync_to_async(services.room_join)(user=users[0], slug="r"))
    joined = await outcome(lambda: services.room_join_async(user=users[1], slug="r"))

    if expected[0] == "ok":
        assert joined[0] == "ok"
        both = [expected[1][0], joined[1]]
        assert [(r.pk, r.slug, r.is_private, r.last_seq) for r in both] == [
            (room.pk, "r", is_private, 7)
        ] * 2
    else:
        assert joined == expected  # the same refusal, word for word
    # Joined or refused, the memberships are as room_join leaves them.
    assert await sync_to_async(memberships)(users[1]) == await sync_to_async(memberships)(users[0])


async def test_a_join_twice_keeps_one_membership(alice, general, path):
    for _ in range(2):
        room = await services.room_join_async(user=alice, slug="general")
        assert room.pk == general.pk
    assert await sync_to_async(memberships)(alice) == [("general", "member", False, False, 0)]


@pytest.mark.parametrize("slug", ["nowhere", "", "a b", "x" * 65, "nul\x00", 7, None])
async def test_an_unknown_or_impossible_slug_is_not_found(alice, general, path, slug):
    with pytest.raises(NotFound):
        await services.room_join_async(user=alice, slug=slug)
    assert await sync_to_async(memberships)(alice) == []


async def test_the_last_seq_and_a_deleted_room(alice, general, path):
    for _ in range(3):
        await sync_to_async(services.message_send)(
            user=alice, slug="general", content="hi", client_id=uuid.uuid4()
        )
    assert await streams.last_seq(room_id=general.pk) == 3
    await sync_to_async(Room.objects.filter(pk=general.pk).delete)()
    with pytest.raises(NotFound):
        await streams.last_seq(room_id=general.pk)


async def test_a_token_finds_its_active_user_as_token_user_does(alice, bob, path):
    alice_key = (await sync_to_async(Token.objects.create)(user=alice)).key
    bob_key = (await sync_to_async(Token.objects.create)(user=bob)).key
    bob.is_active = False
    await sync_to_async(bob.save)()

    found = await token_user_async(alice_key)
    assert found is not None and found.pk == alice.pk
    orm = await sync_to_async(token_user)(alice_key)
    # Every field as the ORM loads it, the password hash included.
    assert {f.attname: getattr(found, f.attname) for f in found._meta.concrete_fields} == {
        f.attname: getattr(orm, f.attname) for f in orm._meta.concrete_fields
    }
    assert found.is_authenticated and not found._state.adding
    for key in (bob_key, "0" * 40, "", "not a key!", "nul\x00" * 3, "x" * 200):
        assert await token_user_async(key) is None, key
        assert await sync_to_async(token_user)(key) is None, key


async def test_a_replays_rows_are_the_selectors_rows(alice, bob, general, path):
    """streams.message_rows (a resume's pages, a gap fill) gives what
    selectors.message_rows_since gives: the same rows, values and types,
    newest `limit` of the range in ascending order, deleted ones included."""
    from chat.selectors import message_rows_since

    for n in range(1, 8):
        await sync_to_async(services.message_send)(
            user=alice if n % 2 else bob, slug="general", content=f"m{n} é", client_id=uuid.uuid4()
        )
    await sync_to_async(Message.objects.filter(room=general, seq=4).update)(is_deleted=True)
    for since, until, limit in [(0, 7, 100), (2, 6, 100), (0, 7, 3), (7, 9, 10), (3, 3, 5)]:
        rows = await streams.message_rows(room_id=general.pk, since=since, until=until, limit=limit)
        expected = await sync_to_async(message_rows_since)(
            room_id=general.pk, since=since, until=until, limit=limit
        )
        assert rows == expected
        assert [type(v) for row in rows for v in row] == [type(v) for row in expected for v in row]
    first = (await streams.message_rows(room_id=general.pk, since=0, until=1, limit=1))[0]
    assert first[4:6] == ("alice", "m1 é")
