"""
Provides the chat writes. A service is the only writer, and it broadcasts only
after commit, so a REST post, a WebSocket frame and an admin action produce the
same event, and no client ever sees a message that was not stored.
"""

import logging
import uuid
from dataclasses import dataclass
from functools import partial

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import IntegrityError, connection, transaction

from . import events
from .errors import BadRequest, Forbidden, NotFound, TooLarge
from .models import Membership, Message, Room
from .ratelimit import limiter
from .selectors import room_access, room_get

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendResult:
    message: Message
    created: bool
    payload: dict


def clean_content(content: object) -> str:
    """Message text as given, or BadRequest/TooLarge with a reason a user can act on."""
    if not isinstance(content, str):
        raise BadRequest("content must be a string")
    if not content.strip():
        raise BadRequest("content must not be empty")
    limit = settings.CHAT_MAX_CONTENT_CHARS
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


def room_create(*, user: AbstractBaseUser, slug: str, name: str, is_private: bool = False) -> Room:
    """Create a room; its creator becomes its owner."""
    if not isinstance(slug, str) or not 1 <= len(slug) <= 64:
        raise BadRequest("slug must be 1 to 64 characters")
    try:
        validate_slug(slug)
    except ValidationError:
        raise BadRequest("slug may contain only letters, digits, '-' and '_'") from None
    if not isinstance(name, str) or not name.strip() or len(name) > 120:
        raise BadRequest("name must be 1 to 120 characters")
    try:
        with transaction.atomic():
            room = Room.objects.create(
                slug=slug, name=name.strip(), is_private=bool(is_private), created_by=user
            )
            Membership.objects.create(room=room, user=user, role=Membership.Role.OWNER)
    except IntegrityError:
        raise BadRequest(f"a room {slug!r} exists already") from None
    return room


def room_join(*, user: AbstractBaseUser, slug: str) -> tuple[Room, Membership]:
    """Make the user a member of a public room, or confirm their membership of a
    private one (FORBIDDEN without an invitation, or when banned)."""
    access = room_access(user=user, room=room_get(slug=slug))
    if access.membership is not None:
        return access.room, access.membership
    membership, _ = Membership.objects.get_or_create(room=access.room, user=user)
    return access.room, membership


def member_invite(*, inviter: AbstractBaseUser, slug: str, username: str) -> Membership:
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


def message_send(
    *, user: AbstractBaseUser, slug: str, content: object, client_id: object
) -> SendResult:
    """Store a message under the room's next seq and broadcast it after commit.

    Idempotent per (user, client_id): a retry returns the original message,
    stores nothing and broadcasts nothing.
    """
    content = clean_content(content)
    client_uuid = clean_client_id(client_id)
    room = room_get(slug=slug)
    access = room_access(user=user, room=room)
    if not access.can_post:
        raise Forbidden(f"you are muted in {room.slug!r}")

    existing = _message_by_client_id(user=user, client_id=client_uuid, room=room)
    if existing is not None:
        return existing

    limiter.hit(("message", user.pk, room.pk), settings.CHAT_MESSAGE_RATE)
    try:
        with transaction.atomic():
            seq = _next_seq(room.pk)
            message = Message.objects.create(
                room=room, seq=seq, user=user, client_id=client_uuid, content=content
            )
            # Posting counts as reading up to one's own message, and makes the
            # author a member of a public room.
            updated = Membership.objects.filter(room=room, user=user, last_read_seq__lt=seq).update(
                last_read_seq=seq
            )
            if not updated and access.membership is None:
                Membership.objects.get_or_create(
                    room=room, user=user, defaults={"last_read_seq": seq}
                )
            payload = events.message_payload(message, room.slug)
            transaction.on_commit(
                partial(events.broadcast_message, room_id=room.pk, payload=payload)
            )
    except IntegrityError:
        # Two sends with one client_id raced; the other one won. Return it.
        existing = _message_by_client_id(user=user, client_id=client_uuid, room=room)
        if existing is None:
            raise
        return existing
    return SendResult(message=message, created=True, payload=payload)


def _message_by_client_id(
    *, user: AbstractBaseUser, client_id: uuid.UUID, room: Room
) -> SendResult | None:
    message = Message.objects.filter(user=user, client_id=client_id).select_related("user").first()
    if message is None:
        return None
    if message.room_id != room.pk:
        raise BadRequest("client_id was already used for a message in another room")
    return SendResult(
        message=message, created=False, payload=events.message_payload(message, room.slug)
    )


def _next_seq(room_id: int) -> int:
    """Bump and return the room's last_seq. The UPDATE holds the row lock until
    commit, so a later seq can never commit before an earlier one."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE chat_room SET last_seq = last_seq + 1 WHERE id = %s RETURNING last_seq",
            [room_id],
        )
        (seq,) = cursor.fetchone()
    return int(seq)


def read_mark(*, user: AbstractBaseUser, slug: str, seq: object) -> int:
    """Move the user's read position forward (never back), clamped to the
    room's last seq; a move is broadcast as a receipt. Returns the position."""
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise BadRequest("seq must be a non-negative integer")
    room = room_get(slug=slug)
    access = room_access(user=user, room=room)
    seq = min(seq, room.last_seq)
    if access.membership is None:
        Membership.objects.get_or_create(room=room, user=user)
    with transaction.atomic():
        moved = Membership.objects.filter(room=room, user=user, last_read_seq__lt=seq).update(
            last_read_seq=seq
        )
        if moved:
            transaction.on_commit(
                partial(
                    events.broadcast_receipt,
                    room_id=room.pk,
                    room_slug=room.slug,
                    user=events.user_payload(user),
                    seq=seq,
                )
            )
    if moved:
        return seq
    return Membership.objects.filter(room=room, user=user).values_list("last_read_seq", flat=True)[
        0
    ]
