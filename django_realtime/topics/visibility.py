"""
Provides per-object visibility for model broadcasts: a publication may name
an audience (a registered check, topics.broadcast), and only the
subscribers the check lets see the object are sent it, live or replayed.

(docs/architecture.md, "Why the modules are as they are")
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import replace
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


def _audience(publication: Publication) -> dict[str, Any]:
    try:
        audience = json.loads(publication.audience or "{}")
    except ValueError:
        return {}
    return audience if isinstance(audience, dict) else {}


def _check_name(publication: Publication) -> str:
    return str(_audience(publication).get("check", ""))


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


async def saw_before(publication: Publication, users: list[Any]) -> set[int] | None:
    """The pks of `users` who could see the object before this save (None:
    the publication stores no before, so it is unknown)."""
    audience = _audience(publication)
    before = audience.get("before")
    if not isinstance(before, dict):
        return None
    previous = replace(
        publication,
        data={},
        audience=json.dumps(
            {"check": audience.get("check"), "pk": audience.get("pk"), "fields": before}
        ),
    )
    return await allowed(previous, users)


def gone(publication: Publication) -> Publication | None:
    """What a subscriber who lost sight of the object is sent instead of
    `publication`: the same offset and key, `{"event": "deleted",
    "<model_name>": {key fields}}` (None: the publication stores none)."""
    data = _audience(publication).get("gone")
    if not isinstance(data, dict):
        return None
    return replace(publication, data=data, audience=None)


async def lost(publication: Publication, users: list[Any], seeing: set[int]) -> set[int]:
    """The pks of `users` who saw the object before this save and do not now
    (`seeing`: the pks that may see it now): one check for them all, and
    none when the publication stores no before or everyone sees it."""
    refused = [user for user in users if user.pk not in seeing]
    if not refused or "gone" not in _audience(publication):
        return set()
    return await saw_before(publication, refused) or set()


async def visible(publications: list[Publication], user: Any) -> list[Publication]:
    """What `user` is sent of `publications` (a replay's), in their order:
    those they may see, and `gone()` for those whose object they lost sight of."""
    kept = []
    for publication in publications:
        if publication.audience is None:
            kept.append(publication)
            continue
        seeing = await allowed(publication, [user])
        if user.pk in seeing:
            kept.append(publication)
            continue
        instead = gone(publication)
        if instead is not None and user.pk in await lost(publication, [user], seeing):
            kept.append(instead)
    return kept
