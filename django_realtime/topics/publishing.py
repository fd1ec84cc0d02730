"""
Provides `publish()` and `apublish()`: store a publication in its topic's
history, then ring the topic's doorbell on the channel layer (every process
with subscribers delivers it).

(docs/architecture.md, "Why the modules are as they are")
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from asgiref.sync import sync_to_async
from django.db import DEFAULT_DB_ALIAS, transaction

from .. import bus, metrics, signals
from ..conf import realtime_settings
from ..errors import BadRequest, TooLarge
from . import names
from .history import Published, history

MAX_KEY_CHARS = 200


def check(topic: str, data: Any, key: str | None, idempotency_key: str | None) -> names.Namespace:
    """The topic's namespace, once the publication is valid; BadRequest,
    TooLarge or NotFound saying what is not."""
    namespace = names.parse(topic)
    for name, value in (("key", key), ("idempotency_key", idempotency_key)):
        if value is not None and (
            not isinstance(value, str) or not value or len(value) > MAX_KEY_CHARS
        ):
            raise BadRequest(f"'{name}' must be a string of 1 to {MAX_KEY_CHARS} characters")
    try:
        size = len(json.dumps(data, ensure_ascii=False, allow_nan=False).encode())
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"'data' must be JSON-serialisable: {exc}") from None
    limit = realtime_settings.TOPICS_MAX_DATA_BYTES
    if size > limit:
        raise TooLarge(f"'data' is {size} bytes encoded; at most {limit}")
    return namespace


def publish_now(
    topic: str,
    data: Any,
    *,
    key: str | None = None,
    idempotency_key: str | None = None,
    audience: str | None = None,
) -> Published:
    """Publish at once from synchronous code; Unavailable if the history's
    Redis is away (nothing was published)."""
    namespace = check(topic, data, key, idempotency_key)
    published = history().publish(
        topic,
        data,
        namespace=namespace,
        key=key,
        idempotency_key=idempotency_key,
        audience=audience,
    )
    if not published.replayed:
        metrics.TOPIC_PUBLICATIONS.inc()
        bus.send_sync(bus.topic_group(topic), published.publication.event())
        _announce(published)
    return published


async def apublish_now(
    topic: str,
    data: Any,
    *,
    key: str | None = None,
    idempotency_key: str | None = None,
    audience: str | None = None,
) -> Published:
    namespace = check(topic, data, key, idempotency_key)
    published = await history().apublish(
        topic,
        data,
        namespace=namespace,
        key=key,
        idempotency_key=idempotency_key,
        audience=audience,
    )
    if not published.replayed:
        metrics.TOPIC_PUBLICATIONS.inc()
        await bus.send(bus.topic_group(topic), published.publication.event())
        _announce(published)
    return published


def _announce(published: Published) -> None:
    publication = published.publication
    signals.published.send(
        sender=Published,
        topic=publication.topic,
        data=publication.data,
        offset=publication.offset,
        key=publication.key,
    )


def publish(
    topic: str,
    data: Any,
    *,
    key: str | None = None,
    idempotency_key: str | None = None,
    using: str = DEFAULT_DB_ALIAS,
) -> int | None:
    """Publish `data` on `topic`; the publication's offset.

    Inside a transaction (of the `using` database) the publication waits for
    the commit, is dropped on a rollback, and None is returned. From async
    code, `await apublish(...)`.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("publish() would block the event loop: use `await apublish(...)`")
    if _after_commit(using, topic, data, key, idempotency_key):
        return None
    return publish_now(topic, data, key=key, idempotency_key=idempotency_key).publication.offset


async def apublish(
    topic: str,
    data: Any,
    *,
    key: str | None = None,
    idempotency_key: str | None = None,
    using: str = DEFAULT_DB_ALIAS,
) -> int | None:
    """publish() from async code, by the same rule: where a transaction of
    `using` is open (sync code in `atomic()` awaiting this through
    `async_to_sync`), the publication waits for the commit and None is
    returned; otherwise the publication's offset."""
    deferred = await sync_to_async(_after_commit, thread_sensitive=True)(
        using, topic, data, key, idempotency_key
    )
    if deferred:
        return None
    published = await apublish_now(topic, data, key=key, idempotency_key=idempotency_key)
    return published.publication.offset


def _after_commit(
    using: str, topic: str, data: Any, key: str | None, idempotency_key: str | None
) -> bool:
    """Whether a transaction is open on this thread's `using` connection; if
    so the publication is registered to follow its commit. Either way it is
    checked first: refused now, not after the commit."""
    check(topic, data, key, idempotency_key)
    if not transaction.get_connection(using).in_atomic_block:
        return False
    transaction.on_commit(
        lambda: publish_now(topic, data, key=key, idempotency_key=idempotency_key),
        using=using,
        robust=True,  # a Redis outage is logged; the commit stands
    )
    return True
