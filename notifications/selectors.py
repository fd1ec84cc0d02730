"""
Provides the notification reads: a user's pages, unread count and the rows an
SSE stream replays. Every read is filtered by recipient, so nobody reads
another user's notifications; each selector owns its query cost.
"""

from django.db.models import Max

from django_realtime.types import User

from .models import Notification


def notifications_page(
    *,
    user: User,
    unread: bool = False,
    before: int | None = None,
    after: int | None = None,
    limit: int = 50,
) -> tuple[list[Notification], bool]:
    """One page and whether more lie beyond it: newest first (before `before`,
    if given), or with `after` the oldest after that id, ascending."""
    qs = Notification.objects.filter(recipient=user)
    if unread:
        qs = qs.filter(read_at__isnull=True)
    if before is not None:
        qs = qs.filter(pk__lt=before)
    if after is not None:
        qs = qs.filter(pk__gt=after).order_by("pk")
    else:
        qs = qs.order_by("-pk")
    rows = list(qs[: limit + 1])
    return rows[:limit], len(rows) > limit


def unread_count(*, user: User) -> int:
    return Notification.objects.filter(recipient=user, read_at__isnull=True).count()


def notifications_after(*, user_id: int, after: int, limit: int) -> tuple[list[Notification], bool]:
    """The user's notifications with id > after, ascending: at most the newest
    `limit`, and whether older ones were left out."""
    qs = Notification.objects.filter(recipient_id=user_id, pk__gt=after)
    rows = list(qs.order_by("-pk")[: limit + 1])
    truncated = len(rows) > limit
    rows = rows[:limit]
    rows.reverse()
    return rows, truncated


def last_notification_id(*, user_id: int) -> int:
    """The id of the user's newest notification, 0 if none."""
    last = (
        Notification.objects.filter(recipient_id=user_id)
        .order_by("-pk")
        .values_list("pk", flat=True)
        .first()
    )
    return last or 0


def max_notification_id() -> int:
    """The highest id handed out to anyone: a Last-Event-ID above it is forged."""
    return Notification.objects.aggregate(m=Max("pk"))["m"] or 0
