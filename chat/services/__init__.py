"""
Provides the chat writes, one module per concept: cleaning, rooms, joins,
invitations, messages (the send), reads and moderation. A service is the only
writer and broadcasts only after commit, so a REST post, a WebSocket frame and
an admin action produce the same event.
"""

from .database import db_alias
from .invitations import member_invite
from .joins import room_join, room_join_async
from .messages import message_send, message_send_async
from .moderation import (
    MAX_REASON_CHARS,
    member_ban,
    member_mute,
    member_remove,
    member_unban,
    member_unmute,
    message_delete,
)
from .reads import read_mark
from .rooms import room_create

__all__ = [
    "MAX_REASON_CHARS",
    "db_alias",
    "member_ban",
    "member_invite",
    "member_mute",
    "member_remove",
    "member_unban",
    "member_unmute",
    "message_delete",
    "message_send",
    "message_send_async",
    "read_mark",
    "room_create",
    "room_join",
    "room_join_async",
]
