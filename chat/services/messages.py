"""
Provides message_send and its event-loop twin message_send_async: a message
stored under its room's next seq, idempotent per (user, client_id), and
broadcast after commit. On PostgreSQL a message that mentions no one is one
statement (SEND_SQL); a mention, or another database, takes the ORM path.
"""

import uuid
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from django.db import IntegrityError, connections, transaction
from django.utils import timezone

from django_realtime.asyncdb import db
from django_realtime.conf import realtime_settings
from django_realtime.errors import BadRequest, Forbidden, NotFound
from django_realtime.limits import limiter
from django_realtime.payloads import user_payload
from django_realtime.types import User

from .. import events
from ..mentions import may_mention, mentions_notify
from ..models import Membership, Message, Room
from ..selectors import access_rule, check_slug, room_access_by_slug
from . import batches
from .cleaning import clean_client_id, clean_content
from .database import db_alias


@dataclass(frozen=True)
class SendResult:
    """A post's answer: the message's room, id and seq, whether this call
    stored it (False: a retry's original), and its frame."""

    room_id: int
    id: int
    seq: int
    created: bool
    payload: dict


def message_send(*, user: User, slug: str, content: object, client_id: object) -> SendResult:
    """Store a message under the room's next seq and broadcast it after commit.

    Idempotent per (user, client_id): a retry returns the original message,
    stores nothing and broadcasts nothing.
    """
    content, client_uuid = clean_content(content), clean_client_id(client_id)
    if not one_statement_applies(content):
        result = _send_general(user=user, slug=slug, content=content, client_uuid=client_uuid)
    else:
        check_slug(slug)
        rate_key = message_rate_key(user, slug)
        limiter.hit(rate_key, realtime_settings.CHAT_MESSAGE_RATE)
        params = _send_params(user=user, slug=slug, content=content, client_uuid=client_uuid)
        try:
            row = _send_row(params)
        except IntegrityError:
            row = RACED  # a racing twin stored this client_id first
        except Exception:  # nothing was stored: the hit does not count
            limiter.refund(rate_key)
            raise
        stored = _sent(row, user=user, params=params, rate_key=rate_key)
        if stored is None:  # a retry: the original message
            stored = _original(_message_by_client_id(user=user, client_id=client_uuid, slug=slug))
        result = stored
    if result.created:
        transaction.on_commit(
            partial(events.broadcast_message, room_id=result.room_id, payload=result.payload),
            using=db_alias(),
        )
    return result


async def message_send_async(
    *, user: User, slug: str, content: object, client_id: object
) -> SendResult:
    """message_send from the event loop (the WebSocket consumer): SEND_SQL over
    django_realtime.pgpool, in a batch with the process's other posts while
    one is in flight (chat.services.batches); the ORM path and the lookup of
    a retry in a thread. Each commits by itself, so the broadcast follows at
    once."""
    content, client_uuid = clean_content(content), clean_client_id(client_id)
    if not one_statement_applies(content):
        result = await db(
            _send_general, user=user, slug=slug, content=content, client_uuid=client_uuid
        )
    else:
        check_slug(slug)
        rate_key = message_rate_key(user, slug)
        await limiter.ahit(rate_key, realtime_settings.CHAT_MESSAGE_RATE)
        params = _send_params(user=user, slug=slug, content=content, client_uuid=client_uuid)
        try:
            row = await batches.store(db_alias(), SEND_SQL, params)
        except IntegrityError:
            row = RACED  # a racing twin stored this client_id first
        except Exception:  # nothing was stored: the hit does not count
            limiter.refund(rate_key)
            raise
        stored = _sent(row, user=user, params=params, rate_key=rate_key)
        if stored is None:  # a retry: the original message
            found = await db(_message_by_client_id, user=user, client_id=client_uuid, slug=slug)
            stored = _original(found)
        result = stored
    if result.created:
        events.broadcast_message(room_id=result.room_id, payload=result.payload)
    return result


# What SEND_SQL answers when a racing twin's insert of the same client_id won.
RACED: Any = object()


def one_statement_applies(content: str) -> bool:
    """Whether a message is stored with SEND_SQL: on PostgreSQL, one that
    mentions no one."""
    return connections[db_alias()].vendor == "postgresql" and not may_mention(content)


def message_rate_key(user: User, slug: str) -> tuple:
    return ("message", user.pk, slug)


def _send_params(*, user: User, slug: str, content: str, client_uuid: uuid.UUID) -> dict:
    return {
        "user_id": user.pk,
        "slug": slug,
        "client_id": client_uuid,
        "content": content,
        "now": timezone.now(),
        "role": Membership.Role.MEMBER.value,
    }


def _send_row(params: dict) -> tuple | None:
    """SEND_SQL's one row on Django's connection, or None. Inside a caller's
    transaction, a savepoint keeps a failed insert from aborting it; on its
    own the statement is its own transaction."""
    connection = connections[db_alias()]
    with (
        transaction.atomic(using=connection.alias) if connection.in_atomic_block else nullcontext()
    ):
        with connection.cursor() as cursor:
            cursor.execute(SEND_SQL, params)
            return cursor.fetchone()


def _sent(row: Any, *, user: User, params: dict, rate_key: tuple) -> SendResult | None:
    """What a SEND_SQL row means: the stored message's SendResult; NOT_FOUND or
    FORBIDDEN for a refusal; None for a retry (or a race lost), whose original
    the caller looks up. Anything but a new message takes its rate hit back."""
    slug = params["slug"]
    if row is not None and row is not RACED and row[5] is not None:
        return _stored(
            user=user,
            slug=slug,
            content=params["content"],
            client_uuid=params["client_id"],
            now=params["now"],
            row=row,
        )
    limiter.refund(rate_key)  # refused, or a retry: not a new message
    if row is None:
        raise NotFound(f"no room {slug!r}")
    if row is not RACED:
        room_id, is_private, membership_id, is_banned, is_muted, _, _ = row
        room = Room(id=room_id, slug=slug, is_private=is_private)
        membership = (
            None
            if membership_id is None
            else Membership(
                id=membership_id, room=room, user=user, is_banned=is_banned, is_muted=is_muted
            )
        )
        if not access_rule(room=room, membership=membership).can_post:
            raise Forbidden(f"you are muted in {slug!r}")
    return None


def _original(existing: SendResult | None) -> SendResult:
    """A retry's answer: the original message, found by its client_id."""
    if existing is None:  # the original went (its room was deleted) meanwhile
        raise BadRequest("client_id was already used; use a new one")
    return existing


# The one-statement send on PostgreSQL, for a message that mentions no one:
# the access rule (the SQL form of selectors.access_rule; a test holds the two
# to the same answers), the seq bump, the insert and the author's read
# position in one statement, one round trip. It is atomic by itself; the
# UPDATE holds the room row lock until commit, so seqs commit in order and
# without gaps (a failed insert rolls the bump back with it). Rows: none when
# there is no such room; otherwise the access facts, and the new message's id
# and seq when stored.
SEND_SQL = f"""
WITH access AS (
    SELECT r.id AS room_id, r.is_private, m.id AS membership_id,
           coalesce(m.is_banned, false) AS is_banned, coalesce(m.is_muted, false) AS is_muted
    FROM {Room._meta.db_table} r
    LEFT JOIN {Membership._meta.db_table} m ON m.room_id = r.id AND m.user_id = %(user_id)s
    WHERE r.slug = %(slug)s
), bump AS (
    UPDATE {Room._meta.db_table} AS r SET last_seq = r.last_seq + 1
    FROM access a
    WHERE r.id = a.room_id AND NOT a.is_banned AND NOT a.is_muted
      AND (NOT a.is_private OR a.membership_id IS NOT NULL)
      AND NOT EXISTS (
          SELECT 1 FROM {Message._meta.db_table}
          WHERE user_id = %(user_id)s AND client_id = %(client_id)s
      )
    RETURNING r.id, r.last_seq
), stored AS (
    INSERT INTO {Message._meta.db_table}
        (room_id, seq, user_id, client_id, content, created_at, is_deleted)
    SELECT id, last_seq, %(user_id)s, %(client_id)s, %(content)s, %(now)s, false FROM bump
    RETURNING id, seq
), read_position AS (
    INSERT INTO {Membership._meta.db_table}
        (room_id, user_id, role, is_banned, is_muted, last_read_seq, joined_at)
    SELECT id, %(user_id)s, %(role)s, false, false, last_seq, %(now)s FROM bump
    ON CONFLICT (room_id, user_id) DO UPDATE
    SET last_read_seq = GREATEST({Membership._meta.db_table}.last_read_seq, EXCLUDED.last_read_seq)
)
SELECT a.room_id, a.is_private, a.membership_id, a.is_banned, a.is_muted, s.id, s.seq
FROM access a LEFT JOIN stored s ON true
"""


def _stored(
    *,
    user: User,
    slug: str,
    content: str,
    client_uuid: uuid.UUID,
    now: datetime,
    row: tuple,
) -> SendResult:
    """The SendResult of a SEND_SQL row that stored a message (its frame
    built from the row, with no model instance)."""
    room_id, message_id, seq = row[0], row[5], row[6]
    payload = events.message_frame(
        room_slug=slug,
        id=message_id,
        seq=seq,
        client_id=client_uuid,
        user=user_payload(user),
        content=content,
        created_at=now,
    )
    return SendResult(room_id=room_id, id=message_id, seq=seq, created=True, payload=payload)


def _send_general(*, user: User, slug: str, content: str, client_uuid: uuid.UUID) -> SendResult:
    """Store a message with the ORM (mentions, and databases other than
    PostgreSQL); the caller broadcasts it after commit."""
    access = room_access_by_slug(user=user, slug=slug)
    room = access.room
    if not access.can_post:
        raise Forbidden(f"you are muted in {room.slug!r}")
    # No lookup of client_id beforehand: the unique index finds a retry when
    # the insert fails, which keeps the common path one query shorter.
    rate_key = message_rate_key(user, room.slug)
    limiter.hit(rate_key, realtime_settings.CHAT_MESSAGE_RATE)
    try:
        with transaction.atomic(using=db_alias()):
            seq = _next_seq(room.pk)
            message = Message.objects.create(
                room=room, seq=seq, user=user, client_id=client_uuid, content=content
            )
            mentions_notify(message=message, room=room)
            # Posting counts as reading up to one's own message, and makes the
            # author a member of a public room.
            updated = Membership.objects.filter(room=room, user=user, last_read_seq__lt=seq).update(
                last_read_seq=seq
            )
            if not updated and access.membership is None:
                Membership.objects.get_or_create(
                    room=room, user=user, defaults={"last_read_seq": seq}
                )
    except IntegrityError:
        # A retry (or a racing twin) of a stored client_id: return the original.
        existing = _message_by_client_id(user=user, client_id=client_uuid, slug=room.slug)
        if existing is None:
            raise
        limiter.refund(rate_key)  # a retry is not a new message
        return existing
    return _result(message, created=True, slug=room.slug)


def _message_by_client_id(*, user: User, client_id: uuid.UUID, slug: str) -> SendResult | None:
    # No ordering: `.first()` would sort by (room, seq) and lead PostgreSQL
    # away from the (user, client_id) unique index.
    rows = (
        Message.objects.filter(user=user, client_id=client_id)
        .select_related("user", "room")
        .order_by()
    )
    message = next(iter(rows[:1]), None)
    if message is None:
        return None
    if message.room.slug != slug:
        raise BadRequest("client_id was already used for a message in another room")
    return _result(message, created=False, slug=slug)


def _result(message: Message, *, created: bool, slug: str) -> SendResult:
    return SendResult(
        room_id=message.room_id,
        id=message.pk,
        seq=message.seq,
        created=created,
        payload=events.message_payload(message, slug),
    )


def _next_seq(room_id: int) -> int:
    """Bump and return the room's last_seq. The UPDATE holds the row lock until
    commit, so a later seq can never commit before an earlier one."""
    with connections[db_alias()].cursor() as cursor:
        cursor.execute(
            "UPDATE chat_room SET last_seq = last_seq + 1 WHERE id = %s RETURNING last_seq",
            [room_id],
        )
        (seq,) = cursor.fetchone()
    return int(seq)
