"""
Provides moderation: staff moderate every room (the admin), a room's owner and
moderators theirs. Every act is one ModerationAction row written in the same
transaction, and what open connections must see is sent after commit.
"""

from functools import partial

from django.db import transaction

from django_realtime.errors import BadRequest, Forbidden, NotFound, TooLarge
from django_realtime.types import User

from .. import events
from ..models import Membership, Message, ModerationAction, Room
from .database import db_alias

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


# What each act sets on the membership: the field and its new value.
_FLAGS = {
    ModerationAction.Action.BAN: ("is_banned", True),
    ModerationAction.Action.UNBAN: ("is_banned", False),
    ModerationAction.Action.MUTE: ("is_muted", True),
    ModerationAction.Action.UNMUTE: ("is_muted", False),
}


def _member_flag(
    action: ModerationAction.Action, *, moderator: User, room: Room, user: User, reason: object
) -> Membership | None:
    """Set the flag `action` sets on the user's membership and record it;
    None when there is nothing to change (no membership to lift a ban or
    mute from)."""
    field, value = _FLAGS[action]
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
            _kick_after_commit(room=room, user=user, reason=reason)
    return membership


def _kick_after_commit(*, room: Room, user: User, reason: str) -> None:
    """Once the transaction commits, the user's open connections get `kicked`
    and leave the room."""
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


def member_ban(*, moderator: User, room: Room, user: User, reason: str = "") -> Membership | None:
    """Ban a user from a room: each of their open connections gets
    `{"type":"kicked","room","reason"}` and leaves the room; from then on
    joining, posting and reading there are FORBIDDEN."""
    act = ModerationAction.Action.BAN
    return _member_flag(act, moderator=moderator, room=room, user=user, reason=reason)


def member_unban(*, moderator: User, room: Room, user: User, reason: str = "") -> Membership | None:
    """Lift a ban; the user may join the room again (nothing is sent)."""
    act = ModerationAction.Action.UNBAN
    return _member_flag(act, moderator=moderator, room=room, user=user, reason=reason)


def member_mute(*, moderator: User, room: Room, user: User, reason: str = "") -> Membership | None:
    """Mute a member: they still read the room, but their next post is FORBIDDEN."""
    act = ModerationAction.Action.MUTE
    return _member_flag(act, moderator=moderator, room=room, user=user, reason=reason)


def member_unmute(
    *, moderator: User, room: Room, user: User, reason: str = ""
) -> Membership | None:
    """Let a muted member post again."""
    act = ModerationAction.Action.UNMUTE
    return _member_flag(act, moderator=moderator, room=room, user=user, reason=reason)


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
            _kick_after_commit(room=room, user=user, reason=reason)
    return True
