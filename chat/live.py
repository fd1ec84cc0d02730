"""
Provides the rooms' live data: public rooms' creations, renames and
deletions are published on `public:rooms` after each commit
(django_realtime.topics), and the index page's room list follows them. A
room made private is a deletion there, one made public a creation; users
banned from a room are not sent its changes.

(docs/architecture.md, "Why the modules are as they are")
"""

from typing import Any

from django_realtime.topics import broadcast_model, register_namespace

from .models import Membership, Room

ROOMS_TOPIC = "public:rooms"


def _topic(room: Room) -> str | None:
    return None if room.is_private else ROOMS_TOPIC


def _may_see(user: Any, room: Room) -> bool:
    """What the index page lists: public rooms, minus those the user is
    banned from (private rooms are never published here; checked again)."""
    if room.is_private:
        return False
    return not Membership.objects.filter(room_id=room.pk, user=user, is_banned=True).exists()


def register() -> None:
    register_namespace("public")
    broadcast_model(
        Room,
        topic=_topic,
        fields=["slug", "name"],
        key=lambda room: room.slug,
        visible=_may_see,
        check_fields=["is_private"],
    )
