"""
Provides the presence reads: last-seen times, and who has any connection
open. (A room's members who are not present are a chat read:
chat.selectors.room_members_offline.)
"""

from collections.abc import Iterable
from datetime import datetime

from django_realtime.limits import slot_holders

from .models import UserPresence


def last_seen_by_user(*, user_ids: Iterable[int]) -> dict[int, datetime]:
    """Each user's last-seen time, for those who have one; one query."""
    rows = UserPresence.objects.filter(user_id__in=set(user_ids))
    return dict(rows.values_list("user_id", "last_seen_at"))


def users_connected(*, user_ids: Iterable[int]) -> set[int]:
    """The users among `user_ids` with an open WebSocket (/ws/ or a
    document's) or SSE stream on any process: "offline" for the offline
    channels (notifications.push, notifications.digests) is the opposite,
    not merely "away". Read from the per-user connection slots every open
    socket and stream holds as a lease (django_realtime.limits), renewed at
    each refresh, so a process that died stops counting within
    SLOT_LEASE_SECONDS. Raises redisconn.ERRORS when Redis does not answer."""
    return slot_holders(("ws", "sse"), sorted(set(user_ids)))
