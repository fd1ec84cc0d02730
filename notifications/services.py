"""
Provides the notification writes: notify one user, notify many, and mark
notifications read. (Mentions are chat's: chat.mentions calls notify_user_ids.)

Why it is shaped so: docs/architecture.md, "notifications.services".
"""

from collections.abc import Iterable
from functools import partial
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connections, router, transaction
from django.utils import timezone

from django_realtime import signals
from django_realtime.errors import BadRequest, NotFound
from django_realtime.types import User

from . import background, events, push
from .models import Notification, NotificationPreference

ANNOUNCEMENT = "announcement"
MAX_KIND_CHARS = 32
MAX_ID = 2**63 - 1


def notify(*, recipient: User, kind: str, data: dict[str, Any]) -> Notification:
    """Store a notification for `recipient` and push it to their open
    connections once the surrounding transaction (if any) commits."""
    (notification,) = notify_many(recipients=[recipient], kind=kind, data=data)
    return notification


def notify_many(
    *, recipients: Iterable[User], kind: str, data: dict[str, Any]
) -> list[Notification]:
    """The same notification for each recipient (announcements), in one insert."""
    return notify_user_ids(user_ids=[user.pk for user in recipients], kind=kind, data=data)


def notify_user_ids(
    *, user_ids: Iterable[int], kind: str, data: dict[str, Any], locked: bool = False
) -> list[Notification]:
    """notify_many by user id. `locked`: the caller holds the recipients' row
    locks already, taken as lock_users() does (`FOR NO KEY UPDATE`, in id
    order), inside its own transaction."""
    _check_kind(kind)
    ids = sorted(set(user_ids))
    if not ids:
        return []
    with transaction.atomic(using=db_alias(), savepoint=not locked):
        if not locked:
            lock_users(ids)
        return _store([Notification(recipient_id=user_id, kind=kind, data=data) for user_id in ids])


def notification_mark_read(*, user: User, notification_id: object) -> Notification:
    """Mark one of the user's notifications read; anyone else's is NOT_FOUND."""
    if (
        isinstance(notification_id, bool)
        or not isinstance(notification_id, int)
        or not 0 < notification_id <= MAX_ID
    ):
        raise NotFound("no such notification")
    notification = Notification.objects.filter(pk=notification_id, recipient=user).first()
    if notification is None:
        raise NotFound("no such notification")
    if notification.read_at is None:
        notification.read_at = timezone.now()
        Notification.objects.filter(pk=notification.pk, read_at__isnull=True).update(
            read_at=notification.read_at
        )
    return notification


def notifications_mark_all_read(*, user: User) -> int:
    """Mark every unread notification of the user read; returns how many."""
    return Notification.objects.filter(recipient=user, read_at__isnull=True).update(
        read_at=timezone.now()
    )


def _check_kind(kind: object) -> None:
    if not isinstance(kind, str) or not 1 <= len(kind) <= MAX_KIND_CHARS:
        raise BadRequest(f"kind must be 1 to {MAX_KIND_CHARS} characters")


def db_alias() -> str:
    """The database notifications are written to: the one the site's routers
    choose, which must be chat's too (a mention commits with its message)."""
    return router.db_for_write(Notification)


def lock_users(user_ids: list[int]) -> None:
    """Serialise notification writes per recipient (see the module docstring).
    Locks are taken in id order, so two writers never deadlock."""
    User = get_user_model()
    list(
        User.objects.filter(pk__in=user_ids)
        .select_for_update(no_key=no_key_lock())
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def no_key_lock() -> bool:
    # FOR NO KEY UPDATE where the database has it (PostgreSQL); SQLite ignores
    # row locks and serialises writers anyway.
    return connections[db_alias()].features.has_select_for_no_key_update


def _store(rows: list[Notification]) -> list[Notification]:
    """Insert `rows` (their recipients locked) and push them after commit."""
    if not rows:
        return []
    stored = Notification.objects.bulk_create(rows)
    frames = [(n.recipient_id, events.notification_frame(n)) for n in stored]
    # Offline reach (notifications.push): the push queue's rows commit with
    # the notifications; this process's sender is woken after the commit.
    push.enqueue(stored, db_alias())
    transaction.on_commit(partial(_committed, frames=frames, stored=stored), using=db_alias())
    return stored


def _committed(*, frames: list[tuple[int, dict[str, Any]]], stored: list[Notification]) -> None:
    events.push_notifications(frames=frames)
    background.wake()
    signals.notified.send(sender=Notification, notifications=stored)


def preferences(*, user: User) -> dict[str, bool]:
    """The user's offline channels: `{"push", "email"}` (both on by default)."""
    row = NotificationPreference.objects.filter(user=user).first()
    return {"push": row.push, "email": row.email} if row else {"push": True, "email": True}


def preferences_update(*, user: User, changes: dict[str, Any]) -> dict[str, bool]:
    """Set `push` and/or `email` (booleans); anything else is BadRequest."""
    unknown = set(changes) - {"push", "email"}
    if unknown:
        raise BadRequest(f"unknown preference: {', '.join(sorted(unknown))}")
    for name, value in changes.items():
        if not isinstance(value, bool):
            raise BadRequest(f"'{name}' must be true or false")
    current = preferences(user=user)
    if changes:
        current.update(changes)
        NotificationPreference.objects.update_or_create(user=user, defaults=current)
    return current
