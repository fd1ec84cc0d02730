"""
Provides the chat writes. A service is the only writer, and it broadcasts only
after commit, so a REST post, a WebSocket frame and an admin action produce the
same event, and no client ever sees a message that was not stored.
"""

import logging
import uuid
from collections.abc import Callable, Generator
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import IntegrityError, connections, router, transaction
from django.utils import timezone

from django_realtime import pgpool
from django_realtime.asyncdb import db
from django_realtime.conf import realtime_settings
from django_realtime.errors import BadRequest, Forbidden, NotFound, TooLarge
from django_realtime.limits import limiter
from django_realtime.payloads import user_payload
from django_realtime.types import User

from . import events
from .mentions import may_mention, mentions_notify
from .models import Membership, Message, ModerationAction, Room
from .selectors import access_rule, check_slug, room_access, room_access_by_slug, room_get

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendResult:
    message: Message
    created: bool
    payload: dict


def db_alias() -> str:
    """The database the chat models are written to (the site's routers decide).
    Notifications and presence must live in the same one: a message and the
    notifications of its mentions commit together."""
    return router.db_for_write(Message)


def clean_content(content: object) -> str:
    """Message text as given, or BadRequest/TooLarge with a reason a user can act on."""
    if not isinstance(content, str):
        raise BadRequest("content must be a string")
    if not content.strip():
        raise BadRequest("content must not be empty")
    limit = realtime_settings.CHAT_MAX_CONTENT_CHARS
    if len(content) > limit:
        raise TooLarge(f"content is {len(content)} characters; the limit is {limit}")
    if "\x00" in content:
        raise BadRequest("content must not contain NUL characters")
    try:
        content.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("content is not valid Unicode (lone surrogate)") from None
    return content


def clean_client_id(value: object) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str) or len(value) > 64:
        raise BadRequest("client_id must be a UUID string")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise BadRequest("client_id must be a UUID string") from None


def room_create(*, user: User, slug: object, name: object, is_private: bool = False) -> Room:
    """Create a room; its creator becomes its owner. RateLimited past the
    user's CHAT_ROOM_CREATE_RATE (the shared limiter: every process
    together), and nothing is created."""
    if not isinstance(slug, str) or not 1 <= len(slug) <= 64:
        raise BadRequest("slug must be 1 to 64 characters")
    try:
        validate_slug(slug)
    except ValidationError:
        raise BadRequest("slug may contain only letters, digits, '-' and '_'") from None
    if not isinstance(name, str) or not name.strip() or len(name) > 120:
        raise BadRequest("name must be 1 to 120 characters")
    rate_key = ("room_create", user.pk)
    limiter.hit(rate_key, realtime_settings.CHAT_ROOM_CREATE_RATE)
    try:
        with transaction.atomic(using=db_alias()):
            room = Room.objects.create(
                slug=slug, name=name.strip(), is_private=bool(is_private), created_by=user
            )
            Membership.objects.create(room=room, user=user, role=Membership.Role.OWNER)
    except IntegrityError:
        limiter.refund(rate_key)  # a taken slug creates nothing
        raise BadRequest(f"a room {slug!r} exists already") from None
    return room


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


def member_invite(*, inviter: User, slug: str, username: object) -> Membership:
    """Add a user to a room; the inviter must be a member (not banned) or staff."""
    room = room_get(slug=slug)
    if not inviter.is_staff:
        room_access(user=inviter, room=room)
        if not Membership.objects.filter(room=room, user=inviter).exists():
            raise Forbidden(f"only members of {room.slug!r} may invite")
    if not isinstance(username, str) or not username:
        raise BadRequest("username is required")
    User = get_user_model()
    try:
        invitee = User.objects.get(**{User.USERNAME_FIELD: username})
    except User.DoesNotExist:
        raise NotFound(f"no user {username!r}") from None
    membership, _ = Membership.objects.get_or_create(room=room, user=invitee)
    return membership


# --- sending ----------------------------------------------------------------------
# One send, written once (_send_steps): checks, the rate limit, the storing and
# what a refusal or a retry means. It says what to run as steps (_Statement,
# _Call); message_send runs them on the site's database connection and
# message_send_async on the event loop (the statement over django_realtime.pgpool, ORM
# steps in a thread). Either broadcasts a stored message after commit.


def message_send(*, user: User, slug: str, content: object, client_id: object) -> SendResult:
    """Store a message under the room's next seq and broadcast it after commit.

    Idempotent per (user, client_id): a retry returns the original message,
    stores nothing and broadcasts nothing.
    """
    steps = _send_steps(user=user, slug=slug, content=content, client_id=client_id)
    step = _resume(steps)
    while not isinstance(step, SendResult):
        try:
            reply = step.run()
        except Exception as exc:  # noqa: BLE001 - handed back to the steps, which decide
            step = _resume(steps, error=exc)
        else:
            step = _resume(steps, reply=reply)
    result = step
    if result.created:
        transaction.on_commit(
            partial(
                events.broadcast_message, room_id=result.message.room_id, payload=result.payload
            ),
            using=db_alias(),
        )
    return result


async def message_send_async(
    *, user: User, slug: str, content: object, client_id: object
) -> SendResult:
    """message_send from the event loop (the WebSocket consumer): the same
    steps, the statement run over django_realtime.pgpool and ORM steps in a thread.
    Each step commits by itself, so the broadcast follows at once."""
    steps = _send_steps(user=user, slug=slug, content=content, client_id=client_id)
    step = _resume(steps)
    while not isinstance(step, SendResult):
        try:
            reply = await step.run_async()
        except Exception as exc:  # noqa: BLE001 - handed back to the steps, which decide
            step = _resume(steps, error=exc)
        else:
            step = _resume(steps, reply=reply)
    result = step
    if result.created:
        events.broadcast_message(room_id=result.message.room_id, payload=result.payload)
    return result


@dataclass(frozen=True)
class _Statement:
    """SEND_SQL with its parameters: its one row, or None."""

    params: dict[str, Any]

    def run(self) -> tuple | None:
        # Inside a caller's transaction, a savepoint keeps a failed insert
        # from aborting it; on its own the statement is its own transaction.
        connection = connections[db_alias()]
        with (
            transaction.atomic(using=connection.alias)
            if connection.in_atomic_block
            else nullcontext()
        ):
            with connection.cursor() as cursor:
                cursor.execute(SEND_SQL, self.params)
                return cursor.fetchone()

    async def run_async(self) -> tuple | None:
        return await pgpool.fetchone(db_alias(), SEND_SQL, self.params)


@dataclass(frozen=True)
class _Call:
    """An ORM step: a function of this module run with keyword arguments."""

    fn: Callable[..., Any]
    kwargs: dict[str, Any]

    def run(self) -> Any:
        return self.fn(**self.kwargs)

    async def run_async(self) -> Any:
        return await db(self.fn, **self.kwargs)


@dataclass(frozen=True)
class _Limit:
    """The rate limit, shared across processes once there is a Redis
    (django_realtime.limits): RateLimited when over it."""

    key: tuple
    rate: str

    def run(self) -> None:
        limiter.hit(self.key, self.rate)

    async def run_async(self) -> None:
        await limiter.ahit(self.key, self.rate)


Step = _Statement | _Call | _Limit
SendSteps = Generator[Step, Any, SendResult]


def _resume(
    steps: SendSteps, *, reply: Any = None, error: BaseException | None = None
) -> "Step | SendResult":
    """Hand the last step's reply (or its error) back to the steps: the next
    step to run, or the send's result once they are done."""
    try:
        return steps.throw(error) if error is not None else steps.send(reply)
    except StopIteration as done:
        return done.value


def _send_steps(*, user: User, slug: str, content: object, client_id: object) -> SendSteps:
    """The whole send, as steps for message_send or message_send_async to run."""
    content = clean_content(content)
    client_uuid = clean_client_id(client_id)
    if not one_statement_applies(content):
        # Mentions (whose notifications commit with the message), and
        # databases other than PostgreSQL: the general path, in one step.
        return (
            yield _Call(
                _send_general,
                {"user": user, "slug": slug, "content": content, "client_uuid": client_uuid},
            )
        )
    check_slug(slug)
    rate_key = message_rate_key(user, slug)
    yield _Limit(rate_key, realtime_settings.CHAT_MESSAGE_RATE)
    now = timezone.now()
    params = {
        "user_id": user.pk,
        "slug": slug,
        "client_id": client_uuid,
        "content": content,
        "now": now,
        "role": Membership.Role.MEMBER.value,
    }
    try:
        row = yield _Statement(params)
    except IntegrityError:
        row = RACED  # a racing twin stored this client_id first
    except BaseException:
        limiter.refund(rate_key)
        raise
    if row is not None and row is not RACED and row[5] is not None:
        return _stored(
            user=user, slug=slug, content=content, client_uuid=client_uuid, now=now, row=row
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
    existing = yield _Call(
        _message_by_client_id, {"user": user, "client_id": client_uuid, "slug": slug}
    )
    if existing is None:  # the original went (its room was deleted) meanwhile
        raise BadRequest("client_id was already used; use a new one")
    return existing


RACED: Any = object()


def one_statement_applies(content: str) -> bool:
    """Whether a message is stored with SEND_SQL: on PostgreSQL, one that
    mentions no one."""
    return connections[db_alias()].vendor == "postgresql" and not may_mention(content)


def message_rate_key(user: User, slug: str) -> tuple:
    return ("message", user.pk, slug)


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
    """The SendResult of a SEND_SQL row that stored a message."""
    room_id, message_id, seq = row[0], row[5], row[6]
    message = Message(
        id=message_id,
        room_id=room_id,
        seq=seq,
        user=user,
        client_id=client_uuid,
        content=content,
        created_at=now,
        is_deleted=False,
    )
    message._state.adding, message._state.db = False, db_alias()
    payload = events.message_payload(message, slug)
    return SendResult(message=message, created=True, payload=payload)


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
    return SendResult(
        message=message, created=True, payload=events.message_payload(message, room.slug)
    )


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
    return SendResult(message=message, created=False, payload=events.message_payload(message, slug))


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


# --- moderation ---------------------------------------------------------------------
# Staff moderate every room (the admin); a room's owner and moderators moderate
# theirs. Every act is one ModerationAction row, written in the same
# transaction, and what open connections must see is sent after commit.

MODERATOR_ROLES = frozenset({Membership.Role.MODERATOR, Membership.Role.OWNER})
MAX_REASON_CHARS = 500


def _clean_reason(reason: object) -> str:
    if reason is None:
        return ""
    if not isinstance(reason, str):
        raise BadRequest("reason must be a string")
    reason = reason.strip()
    if len(reason) > MAX_REASON_CHARS:
        raise TooLarge(f"reason is {len(reason)} characters; the limit is {MAX_REASON_CHARS}")
    return reason


def _is_staff(user: User) -> bool:
    return bool(getattr(user, "is_staff", False) and getattr(user, "is_active", True))


def _require_moderator(*, moderator: User, room: Room, target: User | None) -> None:
    """FORBIDDEN unless `moderator` may moderate `room`; only staff act on staff
    or on the room's owner."""
    if _is_staff(moderator):
        return
    role = (
        Membership.objects.filter(room=room, user=moderator, is_banned=False)
        .values_list("role", flat=True)
        .first()
    )
    if role not in MODERATOR_ROLES:
        raise Forbidden(f"only staff and the moderators of {room.slug!r} may moderate it")
    if target is not None and (
        _is_staff(target)
        or Membership.objects.filter(room=room, user=target, role=Membership.Role.OWNER).exists()
    ):
        raise Forbidden("only staff may moderate staff or a room's owner")


def _audit(
    *,
    moderator: User,
    action: str,
    room: Room,
    target_user: User | None = None,
    message: Message | None = None,
    reason: str = "",
) -> ModerationAction:
    return ModerationAction.objects.create(
        moderator=moderator,
        action=action,
        room=room,
        target_user=target_user,
        message=message,
        reason=reason,
    )


def message_delete(*, moderator: User, message_id: int, reason: str = "") -> Message:
    """Hide a message from everyone and tell its room at once (after commit):
    `{"type":"message_deleted","room","id","seq"}`.

    The row stays, marked is_deleted, so the room's seqs stay gap-free and the
    audit trail can still point at it; history, resumes and unread counts skip
    it. Deleting a deleted message changes, records and sends nothing.
    """
    if isinstance(message_id, bool) or not isinstance(message_id, int):
        raise BadRequest("message_id must be an integer")
    reason = _clean_reason(reason)
    with transaction.atomic(using=db_alias()):
        message = (
            Message.objects.select_for_update(of=("self",))
            .select_related("room", "user")
            .filter(pk=message_id)
            .first()
        )
        if message is None:
            raise NotFound(f"no message {message_id}")
        _require_moderator(moderator=moderator, room=message.room, target=message.user)
        if message.is_deleted:
            return message
        message.is_deleted = True
        message.save(update_fields=["is_deleted"])
        _audit(
            moderator=moderator,
            action=ModerationAction.Action.MESSAGE_DELETE,
            room=message.room,
            target_user=message.user,
            message=message,
            reason=reason,
        )
        transaction.on_commit(
            using=db_alias(),
            func=partial(
                events.broadcast_message_deleted,
                room_id=message.room_id,
                room_slug=message.room.slug,
                message_id=message.pk,
                seq=message.seq,
            ),
        )
    return message


def _member_flag(
    *,
    moderator: User,
    room: Room,
    user: User,
    field: str,
    value: bool,
    action: str,
    reason: object,
) -> Membership | None:
    """Set `field` on the user's membership and record it; None when there is
    nothing to change (no membership to lift a ban or mute from)."""
    reason = _clean_reason(reason)
    _require_moderator(moderator=moderator, room=room, target=user)
    with transaction.atomic(using=db_alias()):
        memberships = Membership.objects.select_for_update()
        if not value:
            membership = memberships.filter(room=room, user=user).first()
        elif field == "is_banned" or not room.is_private:
            # A banned membership grants nothing, and anyone may join a public
            # room, so these may be created for a user who is not a member yet.
            membership, _ = memberships.get_or_create(room=room, user=user)
        else:
            membership = memberships.filter(room=room, user=user).first()
            if membership is None:
                raise NotFound(f"{user.get_username()!r} is not a member of {room.slug!r}")
        if membership is None or getattr(membership, field) == value:
            return membership
        setattr(membership, field, value)
        membership.save(update_fields=[field])
        _audit(moderator=moderator, action=action, room=room, target_user=user, reason=reason)
        if action == ModerationAction.Action.BAN:
            transaction.on_commit(
                using=db_alias(),
                func=partial(
                    events.notify_kicked,
                    user_id=user.pk,
                    room_id=room.pk,
                    room_slug=room.slug,
                    reason=reason,
                ),
            )
    return membership


def member_ban(*, moderator: User, room: Room, user: User, reason: str = "") -> Membership | None:
    """Ban a user from a room: each of their open connections gets
    `{"type":"kicked","room","reason"}` and leaves the room; from then on
    joining, posting and reading there are FORBIDDEN."""
    return _member_flag(
        moderator=moderator,
        room=room,
        user=user,
        field="is_banned",
        value=True,
        action=ModerationAction.Action.BAN,
        reason=reason,
    )


def member_unban(*, moderator: User, room: Room, user: User, reason: str = "") -> Membership | None:
    """Lift a ban; the user may join the room again (nothing is sent)."""
    return _member_flag(
        moderator=moderator,
        room=room,
        user=user,
        field="is_banned",
        value=False,
        action=ModerationAction.Action.UNBAN,
        reason=reason,
    )


def member_mute(*, moderator: User, room: Room, user: User, reason: str = "") -> Membership | None:
    """Mute a member: they still read the room, but their next post is FORBIDDEN."""
    return _member_flag(
        moderator=moderator,
        room=room,
        user=user,
        field="is_muted",
        value=True,
        action=ModerationAction.Action.MUTE,
        reason=reason,
    )


def member_unmute(
    *, moderator: User, room: Room, user: User, reason: str = ""
) -> Membership | None:
    """Let a muted member post again."""
    return _member_flag(
        moderator=moderator,
        room=room,
        user=user,
        field="is_muted",
        value=False,
        action=ModerationAction.Action.UNMUTE,
        reason=reason,
    )


def member_remove(*, moderator: User, room: Room, user: User, reason: str = "") -> bool:
    """Delete a user's membership. In a private room that ends their access, so
    their open connections get `kicked` and leave the room; in a public one they
    may join again (and a ban kept on the membership is lifted with it).
    Returns whether there was a membership."""
    reason = _clean_reason(reason)
    _require_moderator(moderator=moderator, room=room, target=user)
    with transaction.atomic(using=db_alias()):
        deleted, _ = Membership.objects.filter(room=room, user=user).delete()
        if not deleted:
            return False
        _audit(
            moderator=moderator,
            action=ModerationAction.Action.REMOVE,
            room=room,
            target_user=user,
            reason=reason,
        )
        if room.is_private:
            transaction.on_commit(
                using=db_alias(),
                func=partial(
                    events.notify_kicked,
                    user_id=user.pk,
                    room_id=room.pk,
                    room_slug=room.slug,
                    reason=reason,
                ),
            )
    return True
