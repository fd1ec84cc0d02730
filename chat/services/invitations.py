"""
Provides member_invite: a member (not banned) or staff adds another user to a
room, the only way into a private one.
"""

from django.contrib.auth import get_user_model

from django_realtime.errors import BadRequest, Forbidden, NotFound
from django_realtime.types import User

from ..models import Membership
from ..selectors import room_access, room_get


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
