"""
Provides the presence reads: last-seen times. (Who has any connection open
is django_realtime.limits.users_connected; a room's members who are not
present are a chat read: chat.selectors.room_members_offline.)
"""

from collections.abc import Iterable
from datetime import datetime

from .models import UserPresence


def last_seen_by_user(*, user_ids: Iterable[int]) -> dict[int, datetime]:
    """Each user's last-seen time, for those who have one; one query."""
    rows = UserPresence.objects.filter(user_id__in=set(user_ids))
    return dict(rows.values_list("user_id", "last_seen_at"))
