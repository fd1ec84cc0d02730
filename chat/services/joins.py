"""
Provides room_join and its event-loop twin room_join_async: membership of a
public room, or confirmed membership of a private one. On PostgreSQL the twin
is one statement (JOIN_SQL) over django_realtime.pgpool.
"""

from django.utils import timezone

from django_realtime import pgpool
from django_realtime.asyncdb import db
from django_realtime.errors import NotFound
from django_realtime.types import User

from ..models import Membership, Room
from ..selectors import access_rule, check_slug, room_access_by_slug
from .database import db_alias


def room_join(*, user: User, slug: str) -> tuple[Room, Membership]:
    """Make the user a member of a public room, or confirm their membership of a
    private one (NOT_FOUND without an invitation, as if it did not exist;
    FORBIDDEN when banned)."""
    access = room_access_by_slug(user=user, slug=slug)  # one query for a member
    if access.membership is not None:
        return access.room, access.membership
    membership, _ = Membership.objects.get_or_create(room=access.room, user=user)
    return access.room, membership


async def room_join_async(*, user: User, slug: object) -> Room:
    """room_join from the event loop (the WebSocket's join): on PostgreSQL
    one statement over django_realtime.pgpool (JOIN_SQL: the room, the
    user's membership, and a new one for a public room), the same answers
    as room_join; elsewhere room_join in a thread. The room it returns
    holds its id, slug, privacy and last seq (read by the same statement:
    what a receiver subscribed to the room before the join may start from)."""
    check_slug(slug)
    assert isinstance(slug, str)
    alias = db_alias()
    if not pgpool.applies(alias):
        room, _membership = await db(room_join, user=user, slug=slug)
        return room
    params = {
        "slug": slug,
        "user_id": user.pk,
        "role": Membership.Role.MEMBER.value,
        "now": timezone.now(),
    }
    row = await pgpool.fetchone(alias, JOIN_SQL, params)
    if row is None:
        raise NotFound(f"no room {slug!r}")
    room_id, is_private, last_seq, membership_id, is_banned, is_muted = row
    room = Room(id=room_id, slug=slug, is_private=is_private, last_seq=last_seq)
    room._state.adding, room._state.db = False, alias
    membership = (
        None
        if membership_id is None  # a public room a racing twin joined first
        else Membership(
            id=membership_id, room=room, user=user, is_banned=is_banned, is_muted=is_muted
        )
    )
    access_rule(room=room, membership=membership)  # FORBIDDEN, or NOT_FOUND for a stranger
    return room


# room_join as one statement: the room and the user's membership; for a
# public room the user is not a member of, a new membership. The access rule
# is applied to its row by selectors.access_rule, as the ORM path does.
JOIN_SQL = f"""
WITH room AS (
    SELECT id, is_private, last_seq FROM {Room._meta.db_table} WHERE slug = %(slug)s
), mine AS (
    SELECT m.id, m.is_banned, m.is_muted
    FROM {Membership._meta.db_table} m, room r
    WHERE m.room_id = r.id AND m.user_id = %(user_id)s
), added AS (
    INSERT INTO {Membership._meta.db_table}
        (room_id, user_id, role, is_banned, is_muted, last_read_seq, joined_at)
    SELECT r.id, %(user_id)s, %(role)s, false, false, 0, %(now)s FROM room r
    WHERE NOT r.is_private AND NOT EXISTS (SELECT 1 FROM mine)
    ON CONFLICT (room_id, user_id) DO NOTHING
    RETURNING id
)
SELECT r.id, r.is_private, r.last_seq, coalesce(m.id, a.id),
       coalesce(m.is_banned, false), coalesce(m.is_muted, false)
FROM room r LEFT JOIN mine m ON true LEFT JOIN added a ON true
"""
