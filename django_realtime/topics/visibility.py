"""
Provides per-object visibility for model broadcasts: a publication may name
an audience (a registered check, topics.broadcast), and only the
subscribers the check lets see the object are sent it, live or replayed.

A check runs in the subscriber's process, in a thread (it may query the
database), once per publication for all of that process's subscribers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from ..asyncdb import db
from ..errors import Unavailable
from .history import Publication

logger = logging.getLogger(__name__)

# A publication's `audience` is JSON naming its check ({"check": name, ...});
# name -> (user, publication) -> bool
Check = Callable[[Any, Publication], bool]
checks: dict[str, Check] = {}


def register(name: str, check: Check) -> None:
    checks[name] = check


def _check_name(publication: Publication) -> str:
    try:
        return str(json.loads(publication.audience or "{}").get("check", ""))
    except (ValueError, AttributeError):
        return ""


def _allowed(publication: Publication, users: list[Any]) -> set[int]:
    check = checks.get(_check_name(publication))
    if check is None:
        logger.warning(
            "publication %s:%s names audience %r, which this process does not know: sent to nobody",
            publication.topic,
            publication.offset,
            publication.audience,
        )
        return set()
    allowed: set[int] = set()
    for user in {user.pk: user for user in users}.values():
        try:
            if check(user, publication):
                allowed.add(user.pk)
        except Exception:  # noqa: BLE001 - a failing check hides the object, never shows it
            logger.exception("visibility check %r failed", publication.audience)
    return allowed


async def allowed(publication: Publication, users: list[Any]) -> set[int]:
    """The ids of `users` who may see `publication` (none while the database is away)."""
    if publication.audience is None:
        return {user.pk for user in users}
    try:
        result: set[int] = await db(_allowed, publication=publication, users=users)
    except Unavailable:
        return set()
    return result


async def visible(publications: list[Publication], user: Any) -> list[Publication]:
    """The publications `user` may see (a replay's), in their order."""
    kept = []
    for publication in publications:
        if publication.audience is None or user.pk in await allowed(publication, [user]):
            kept.append(publication)
    return kept
