"""
Provides room_create: a room and its owner's membership in one transaction,
within the user's CHAT_ROOM_CREATE_RATE.
"""

from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import IntegrityError, transaction

from django_realtime.conf import realtime_settings
from django_realtime.errors import BadRequest
from django_realtime.limits import limiter
from django_realtime.types import User

from ..models import Membership, Room
from .database import db_alias


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
