"""
Provides the rooms' live data: public rooms' creations, renames and
deletions are published on `public:rooms` after each commit
(django_realtime.topics), and the index page's room list follows them.

The namespace `public` is declared here with the defaults (any signed-in
user subscribes, staff publish over HTTP); a site's REALTIME["TOPICS"]
may redefine it.
"""

from typing import Any

from django_realtime.topics import broadcast_model, register_namespace

from .models import Room

ROOMS_TOPIC = "public:rooms"


def _topic(room: Room) -> str | None:
    return None if room.is_private else ROOMS_TOPIC


def _may_see(user: Any, room: Room) -> bool:
    # Private rooms are never published here; checked again per subscriber.
    return not room.is_private


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
