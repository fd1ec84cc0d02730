"""
Provides db(): a service or selector called from async code, off the event loop.
"""

import logging
from collections.abc import Callable
from typing import Any

from channels.db import database_sync_to_async
from django.db import Error as DatabaseError

from django_realtime.errors import Unavailable

logger = logging.getLogger(__name__)


async def db(fn: Callable[..., Any], /, **kwargs: Any) -> Any:
    """Run a service or selector off the event loop; a database outage is
    UNAVAILABLE (a ClientError: an `error` frame, a 503).

    The calls of all connections run side by side on a pool of threads (each
    with its own database connection, closed when stale around each call)
    rather than queueing on the one shared thread Channels uses by default;
    one connection's calls still run one at a time, because its consumer
    awaits each. That also keeps a long-lived stream (SSE) from holding a
    thread of its own between calls.
    """
    try:
        return await database_sync_to_async(fn, thread_sensitive=False)(**kwargs)
    except DatabaseError as exc:
        logger.warning("database error in %s: %r", getattr(fn, "__name__", fn), exc)
        raise Unavailable("storage is unavailable; retry shortly") from None
