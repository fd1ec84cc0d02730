"""The one access rule in its three forms agree on every case: the selector
(chat.selectors.access_rule, behind room_access), its SQL form inside the
one-statement send (chat.services.messages.SEND_SQL), its form for many users
(users_who_may_read, which mentions use) and the room list's
(rooms_visible)."""

import itertools
import uuid

import pytest
from django.db import connection

from chat import selectors, services
from chat.models import Membership, Room
from chat.services import batches
from django_realtime.errors import ClientError

pytestmark = pytest.mark.django_db

MEMBERSHIPS = {
    "none": None,
    "member": {},
    "muted": {"is_muted": True},
    "banned": {"is_banned": True},
    "banned and muted": {"is_banned": True, "is_muted": True},
    "moderator": {"role": Membership.Role.MODERATOR},
}
CASES = list(itertools.product([False, True], MEMBERSHIPS))


def outcome(call):
    """("ok", value) or (code, message) of a refusal."""
    try:
        return ("ok", call())
    except ClientError as exc:
        return (exc.code, exc.message)


@pytest.mark.parametrize(("is_private", "membership"), CASES)
@pytest.mark.parametrize("path", ["one statement", "batch", "general path"])
def test_the_sql_form_and_the_selector_agree(
    django_user_model, monkeypatch, is_private, membership, path
):
    if path == "general path":
        monkeypatch.setattr("chat.services.messages.one_statement_applies", lambda content: False)
    if path == "batch":  # the one statement of a batch of posts (chat.services.batches)
        monkeypatch.setattr("chat.services.messages._send_row", batch_row)
    owner = django_user_model.objects.create_user(username="owner", password="x")
    user = django_user_model.objects.create_user(username="someone", password="x")
    room = services.room_create(user=owner, slug="r", name="R", is_private=is_private)
    if MEMBERSHIPS[membership] is not None:
        Membership.objects.create(room=room, user=user, **MEMBERSHIPS[membership])

    decided = outcome(lambda: selectors.room_access(user=user, room=room).can_post)
    may_read = user.pk in selectors.users_who_may_read(room=room, user_ids=[user.pk])
    listed = room.pk in set(selectors.rooms_visible(user=user).values_list("pk", flat=True))
    sent = outcome(
        lambda: (
            services.message_send(
                user=user, slug="r", content="hello", client_id=str(uuid.uuid4())
            ).created
        )
    )

    assert may_read == (decided[0] == "ok"), "users_who_may_read disagrees with room_access"
    assert listed == (decided[0] == "ok"), "rooms_visible disagrees with room_access"
    if decided == ("ok", True):
        assert sent == ("ok", True)
    elif decided == ("ok", False):
        assert sent == ("FORBIDDEN", "you are muted in 'r'")
    else:
        assert sent == decided  # the same refusal, word for word
    room.refresh_from_db()
    assert room.last_seq == (1 if sent == ("ok", True) else 0)


def batch_row(params):
    """SEND_SQL's row for one post, from the batch statement."""
    with connection.cursor() as cursor:
        cursor.execute(batches.batch_sql("default"), batches.batch_params([params]))
        row = cursor.fetchone()
    return None if row is None else row[1:]


def test_every_case_is_covered():
    """A new membership flag must be added to MEMBERSHIPS above."""
    flags = {f.name for f in Membership._meta.get_fields() if f.name.startswith("is_")}
    assert flags == {"is_banned", "is_muted"}
    assert {f.name for f in Room._meta.get_fields() if f.name.startswith("is_")} == {"is_private"}
