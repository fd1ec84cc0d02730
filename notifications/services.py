"""
Provides the notification writes: notify one user, notify many, notify the
users a message mentions, and mark notifications read.

A service is the only writer. Each stores the rows and pushes them to the
recipients' open connections after commit, from any synchronous code: a view,
a signal, a management command or a worker process.

Per recipient, notifications commit in id order: each write first locks the
recipients' user rows (FOR NO KEY UPDATE, which does not block inserts that
merely reference the user), so a later id never commits before an earlier
one. An SSE stream can then resume "after id N" and fill from the database
without missing a row that committed late.
"""

import re
from collections.abc import Iterable
from functools import partial
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import connections, router, transaction
from django.utils import timezone

from chat.events import user_payload
from chat.models import Message, Room
from chat.selectors import users_who_may_read
from django_realtime.errors import BadRequest, NotFound

from . import events
from .models import Notification

MENTION = "mention"
ANNOUNCEMENT = "announcement"
EXCERPT_CHARS = 200
# A message may name at most this many users; more are ignored, so one
# message cannot fan out to a whole directory.
MAX_MENTIONS_PER_MESSAGE = 50
MAX_KIND_CHARS = 32
MAX_ID = 2**63 - 1

# `@name` not preceded by a word character or one of @.+- (so e-mail addresses
# don't count), ending on a word character (so "@bob." and "@bob," mention bob).
MENTION_RE = re.compile(r"(?<![\w@.+-])@([\w.+-]*\w)")


def notify(*, recipient: AbstractBaseUser, kind: str, data: dict[str, Any]) -> Notification:
    """Store a notification for `recipient` and push it to their open
    connections once the surrounding transaction (if any) commits."""
    (notification,) = notify_many(recipients=[recipient], kind=kind, data=data)
    return notification


def notify_many(
    *, recipients: Iterable[AbstractBaseUser], kind: str, data: dict[str, Any]
) -> list[Notification]:
    """The same notification for each recipient (announcements), in one insert."""
    _check_kind(kind)
    user_ids = sorted({user.pk for user in recipients})
    if not user_ids:
        return []
    with transaction.atomic(using=_db()):
        _lock_users(user_ids)
        return _store(
            [Notification(recipient_id=user_id, kind=kind, data=data) for user_id in user_ids]
        )


def mentions_notify(*, message: Message, room: Room) -> list[Notification]:
    """Notify each user that `message` mentions and who may read `room`.

    Called by chat.services.message_send inside the storing transaction, for
    new messages only, so a retried send notifies nobody again. Never the
    author; at most once per user per message. Three queries at most: the
    names (locking those users), their memberships, the insert.
    """
    names = list(dict.fromkeys(MENTION_RE.findall(message.content)))[:MAX_MENTIONS_PER_MESSAGE]
    if not names:
        return []
    with transaction.atomic(using=_db(), savepoint=False):
        return _mentions_store(message=message, room=room, names=names)


def _mentions_store(*, message: Message, room: Room, names: list[str]) -> list[Notification]:
    User = get_user_model()
    user_ids = list(
        User.objects.filter(**{f"{User.USERNAME_FIELD}__in": names}, is_active=True)
        .exclude(pk=message.user_id)
        .select_for_update(no_key=_no_key())
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    if not user_ids:
        return []
    readers = users_who_may_read(room=room, user_ids=user_ids)
    data = {
        "room": room.slug,
        "message_id": message.pk,
        "seq": message.seq,
        "from": user_payload(message.user),
        "excerpt": message.content[:EXCERPT_CHARS],
    }
    return _store(
        [
            Notification(recipient_id=user_id, kind=MENTION, data=data)
            for user_id in user_ids
            if user_id in readers
        ]
    )


def notification_mark_read(*, user: AbstractBaseUser, notification_id: object) -> Notification:
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


def notifications_mark_all_read(*, user: AbstractBaseUser) -> int:
    """Mark every unread notification of the user read; returns how many."""
    return Notification.objects.filter(recipient=user, read_at__isnull=True).update(
        read_at=timezone.now()
    )


def _check_kind(kind: object) -> None:
    if not isinstance(kind, str) or not 1 <= len(kind) <= MAX_KIND_CHARS:
        raise BadRequest(f"kind must be 1 to {MAX_KIND_CHARS} characters")


def _db() -> str:
    """The database notifications are written to: the one the site's routers
    choose, which must be chat's too (a mention commits with its message)."""
    return router.db_for_write(Notification)


def _lock_users(user_ids: list[int]) -> None:
    """Serialise notification writes per recipient (see the module docstring).
    Locks are taken in id order, so two writers never deadlock."""
    User = get_user_model()
    list(
        User.objects.filter(pk__in=user_ids)
        .select_for_update(no_key=_no_key())
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def _no_key() -> bool:
    # FOR NO KEY UPDATE where the database has it (PostgreSQL); SQLite ignores
    # row locks and serialises writers anyway.
    return connections[_db()].features.has_select_for_no_key_update


def _store(rows: list[Notification]) -> list[Notification]:
    """Insert `rows` (their recipients locked) and push them after commit."""
    if not rows:
        return []
    stored = Notification.objects.bulk_create(rows)
    frames = [(n.recipient_id, events.notification_frame(n)) for n in stored]
    transaction.on_commit(partial(events.push_notifications, frames=frames), using=_db())
    return stored
