"""
Provides the presence reads: last-seen times, and the members of a room who
are not in its presence.
"""

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db.models import F

from chat.events import iso
from chat.models import Membership
from django_realtime.users import username_path

from .models import UserPresence

# Not a status a connection can set: how a member who is not here is listed.
OFFLINE = "offline"


def last_seen_by_user(*, user_ids: Iterable[int]) -> dict[int, datetime]:
    """Each user's last-seen time, for those who have one; one query."""
    rows = UserPresence.objects.filter(user_id__in=set(user_ids))
    return dict(rows.values_list("user_id", "last_seen_at"))


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
            "user": {"id": user_id, "username": username},
            "status": OFFLINE,
            "last_seen_at": iso(seen) if seen else None,
        }
        for user_id, username, seen in rows
    ]
