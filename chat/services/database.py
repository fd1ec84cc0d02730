"""
Provides db_alias, the one database every chat write goes to, so a message,
its room's seq and the notifications of its mentions commit together.
"""

from django.db import router

from ..models import Message


def db_alias() -> str:
    """The database the chat models are written to (the site's routers decide).
    Notifications and presence must live in the same one: a message and the
    notifications of its mentions commit together."""
    return router.db_for_write(Message)
