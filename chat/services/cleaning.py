"""
Provides the cleaning of what a user sends with a message: its text and its
client_id, each returned as stored or refused with a reason a user can act on.
"""

import uuid

from django_realtime.conf import realtime_settings
from django_realtime.errors import BadRequest, TooLarge


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
