"""
Provides read_mark: a user's read position in a room moves forward only, and
each move reaches the room as a receipt after commit.
"""

from functools import partial

from django.db import transaction

from django_realtime.errors import BadRequest
from django_realtime.payloads import user_payload
from django_realtime.types import User

from .. import events
from ..models import Membership
from ..selectors import room_access, room_get
from .database import db_alias


def read_mark(*, user: User, slug: str, seq: object) -> int:
    """Move the user's read position forward (never back), clamped to the
    room's last seq; a move is broadcast as a receipt. Returns the position."""
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise BadRequest("seq must be a non-negative integer")
    room = room_get(slug=slug)
    access = room_access(user=user, room=room)
    seq = min(seq, room.last_seq)
    if access.membership is None:
        Membership.objects.get_or_create(room=room, user=user)
    with transaction.atomic(using=db_alias()):
        moved = Membership.objects.filter(room=room, user=user, last_read_seq__lt=seq).update(
            last_read_seq=seq
        )
        if moved:
            transaction.on_commit(
                using=db_alias(),
                func=partial(
                    events.broadcast_receipt,
                    room_id=room.pk,
                    room_slug=room.slug,
                    user=user_payload(user),
                    seq=seq,
                ),
            )
    if moved:
        return seq
    return Membership.objects.filter(room=room, user=user).values_list("last_read_seq", flat=True)[
        0
    ]
