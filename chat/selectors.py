"""
Provides the chat reads: rooms a user can see, the one access rule, history
pages and read positions. Each selector owns its query cost.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.core.validators import slug_re
from django.db.models import (
    Case,
    Count,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce

from django_realtime.errors import Forbidden, NotFound
from django_realtime.payloads import iso, user_payload, user_payload_of
from django_realtime.types import User
from django_realtime.users import username_path

from .models import Membership, Message, Room


@dataclass(frozen=True)
class Access:
    """What one user may do in one room, decided by `room_access`."""

    room: Room
    membership: Membership | None
    can_post: bool


def one_or_none(queryset: QuerySet) -> Any:
    """The row a unique lookup finds, or None. Unlike `.first()` it orders by
    nothing: a model's default ordering would cost joins and sorting (and
    Django's compiling them) for one row."""
    return next(iter(queryset.order_by()[:1]), None)


def check_slug(slug: object) -> None:
    """NOT_FOUND for what cannot be a slug, before it reaches the database."""
    # What is not a slug names no room; it never reaches the database (a NUL
    # in it would fail there as if the database were down).
    if not isinstance(slug, str) or len(slug) > 64 or not slug_re.match(slug):
        raise NotFound(f"no room {slug!r}")


def room_get(*, slug: str) -> Room:
    check_slug(slug)
    try:
        return Room.objects.get(slug=slug)
    except Room.DoesNotExist:
        raise NotFound(f"no room {slug!r}") from None


def room_access(*, user: User, room: Room) -> Access:
    """The one access rule for HTTP and WebSocket.

    Anyone may read a public room; a private room needs a membership. A banned
    member may do nothing; a muted one may read but not post.
    """
    membership = one_or_none(Membership.objects.filter(room=room, user=user))
    return access_rule(room=room, membership=membership)


def room_access_by_slug(*, user: User, slug: str) -> Access:
    """room_access by slug: one query for a member (the common case), two otherwise."""
    check_slug(slug)
    membership = one_or_none(
        Membership.objects.select_related("room").filter(room__slug=slug, user=user)
    )
    if membership is not None:
        return access_rule(room=membership.room, membership=membership)
    return access_rule(room=room_get(slug=slug), membership=None)


def access_rule(*, room: Room, membership: Membership | None) -> Access:
    """The access rule itself, on the facts: what `membership` (None: not a
    member) allows in `room`. Raises FORBIDDEN where it allows nothing.
    chat.services.messages.SEND_SQL holds its SQL form, users_who_may_read its form for
    many users; tests/chat/test_access_rule.py holds all three to one answer."""
    if membership is not None and membership.is_banned:
        raise Forbidden(f"you are banned from {room.slug!r}")
    if room.is_private and membership is None:
        # To whoever may not read it, a private room does not exist: the very
        # refusal an unknown slug gets, so a stranger cannot enumerate them.
        raise NotFound(f"no room {room.slug!r}")
    return Access(
        room=room,
        membership=membership,
        can_post=membership is None or not membership.is_muted,
    )


def users_who_may_read(*, room: Room, user_ids: list[int]) -> set[int]:
    """Which of `user_ids` `room_access` lets read `room`, in one query: the
    same rule for many users (public: anyone not banned; private: members
    not banned)."""
    if not user_ids:
        return set()
    memberships = dict(
        Membership.objects.filter(room=room, user_id__in=user_ids).values_list(
            "user_id", "is_banned"
        )
    )
    if room.is_private:
        return {uid for uid, banned in memberships.items() if not banned}
    return {uid for uid in user_ids if not memberships.get(uid, False)}


def rooms_visible(*, user: User) -> QuerySet[Room]:
    """Public rooms and the private rooms the user belongs to, minus bans,
    annotated with the user's `last_read_seq` and `unread_count` (one query)."""
    mine = Membership.objects.filter(room=OuterRef("pk"), user=user)
    unread = (
        Message.objects.filter(room=OuterRef("pk"), is_deleted=False)
        .filter(seq__gt=OuterRef("last_read_seq"))
        .exclude(user=user)
        .order_by()
        .values("room")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return (
        Room.objects.filter(
            Q(is_private=False) | Q(pk__in=Membership.objects.filter(user=user).values("room"))
        )
        .exclude(pk__in=Membership.objects.filter(user=user, is_banned=True).values("room"))
        .annotate(
            is_member=Coalesce(Subquery(mine.values("pk")[:1]), Value(0)),
            last_read_seq=Coalesce(
                Subquery(mine.values("last_read_seq")[:1]), Value(0), output_field=IntegerField()
            ),
        )
        .annotate(
            # Only members have unread messages; a public room one has never
            # joined shows 0, as in Slack.
            unread_count=Case(
                When(is_member=0, then=Value(0)),
                default=Coalesce(Subquery(unread, output_field=IntegerField()), Value(0)),
                output_field=IntegerField(),
            )
        )
        .order_by("slug")
    )


def rooms_last_seq(*, room_ids: list[int]) -> dict[int, int]:
    return dict(Room.objects.filter(pk__in=room_ids).values_list("pk", "last_seq"))


def messages_page(
    *, room: Room, before: int | None = None, after: int | None = None, limit: int = 50
) -> tuple[list[Message], bool]:
    """One history page and whether more lie beyond it.

    With `after`, the page is the oldest messages after that seq, ascending;
    otherwise the newest messages (before `before`, if given), descending.
    """
    qs = Message.objects.filter(room=room, is_deleted=False).select_related("user")
    if before is not None:
        qs = qs.filter(seq__lt=before)
    if after is not None:
        qs = qs.filter(seq__gt=after).order_by("seq")
    else:
        qs = qs.order_by("-seq")
    rows = list(qs[: limit + 1])
    return rows[:limit], len(rows) > limit


# The fields of a message a replay sends, as message_rows_since gives them.
MessageRow = tuple[int, int, Any, int, str, str, Any, bool]


def message_rows_since(*, room_id: int, since: int, until: int, limit: int) -> list[MessageRow]:
    """Messages with since < seq <= until, ascending, at most the newest
    `limit` (deleted ones included, so the caller can advance past them), as
    rows (seq, id, client_id, user id, username, content, created_at,
    is_deleted): a replay reads thousands, and building models was half its
    cost."""
    rows = list(
        Message.objects.filter(room_id=room_id, seq__gt=since, seq__lte=until)
        .order_by("-seq")
        .values_list(
            "seq",
            "pk",
            "client_id",
            "user_id",
            username_path("user"),
            "content",
            "created_at",
            "is_deleted",
        )[:limit]
    )
    rows.reverse()
    return rows


def receipts(*, room: Room) -> list[dict[str, Any]]:
    """Read positions of the room's members who have read anything."""
    rows = (
        Membership.objects.filter(room=room, is_banned=False, last_read_seq__gt=0)
        .select_related("user")
        .order_by(username_path("user"))
    )
    return [{"user": user_payload(m.user), "seq": m.last_read_seq} for m in rows]


# Not a status a connection can set: how a member who is not here is listed.
OFFLINE = "offline"


def room_members_offline(
    *, room_id: int, present_user_ids: Iterable[int], limit: int
) -> list[dict[str, Any]]:
    """A room's members who are not in its presence, most recently seen first,
    with their last-seen time (null if never recorded); one query."""
    rows = (
        Membership.objects.filter(room_id=room_id, is_banned=False)
        .exclude(user_id__in=set(present_user_ids))
        .order_by(
            F("user__realtime_presence__last_seen_at").desc(nulls_last=True),
            username_path("user"),
        )
        .values_list("user_id", username_path("user"), "user__realtime_presence__last_seen_at")[
            :limit
        ]
    )
    return [
        {
            "user": user_payload_of(user_id, username),
            "status": OFFLINE,
            "last_seen_at": iso(seen) if seen else None,
        }
        for user_id, username, seen in rows
    ]
