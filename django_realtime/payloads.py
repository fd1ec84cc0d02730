"""
Provides the primitives every frame is made of, shared by the apps: the one
time format and the one way a user appears in a frame.
"""

from datetime import UTC, datetime
from typing import Any


def iso(dt: datetime) -> str:
    """ISO 8601 in UTC with a Z, the one time format of every frame."""
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def user_payload(user: Any) -> dict[str, Any]:
    """`{"id", "username"}`: a user as every frame and REST response shows them."""
    return user_payload_of(user.pk, user.get_username())


def user_payload_of(pk: Any, username: str) -> dict[str, Any]:
    """user_payload from a user's id and username (read without the user object)."""
    return {"id": pk, "username": username}
