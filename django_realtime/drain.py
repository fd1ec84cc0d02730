"""
Provides the graceful drain: on SIGTERM, every open WebSocket is closed with
1012 (service restart) before the process exits, so clients reconnect, with
jitter, to another process and resume with `since`; nothing in flight is lost
because every send is acked from the database and retried by client_id.

(docs/architecture.md, "Why the modules are as they are")
"""

import asyncio
import logging
import sys
import weakref
from typing import Any

from .closecodes import CloseCode

logger = logging.getLogger(__name__)

# Long enough for close frames to go out on a few thousand sockets, short
# enough that an orchestrator's kill timeout (often 10-30 s) is never reached.
DRAIN_SECONDS = 3.0

_open: "weakref.WeakSet[Any]" = weakref.WeakSet()
_daphne_drain_installed = False


def register(consumer: Any) -> None:
    _open.add(consumer)


def unregister(consumer: Any) -> None:
    _open.discard(consumer)


async def drain(timeout: float = DRAIN_SECONDS) -> None:
    """Close every registered socket with 1012 and wait (bounded) for them to go."""
    consumers = list(_open)
    if not consumers:
        return
    logger.info(
        "draining %d WebSocket connections with %d", len(consumers), int(CloseCode.SERVICE_RESTART)
    )
    await asyncio.gather(
        *(c.close(code=int(CloseCode.SERVICE_RESTART)) for c in consumers), return_exceptions=True
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while _open and loop.time() < deadline:  # noqa: ASYNC110 - a WeakSet has no event
        await asyncio.sleep(0.05)


def install_daphne_drain() -> None:
    """Run drain() before daphne's reactor shuts down (SIGTERM, SIGINT)."""
    global _daphne_drain_installed
    if "twisted.internet.reactor" not in sys.modules or _daphne_drain_installed:
        return  # not under daphne (importing the reactor would install one), or done
    _daphne_drain_installed = True
    from twisted.internet import defer, reactor

    def before_shutdown():
        return defer.Deferred.fromFuture(asyncio.ensure_future(drain()))

    # The module `reactor` is typed as IReactorCore, whose stub lacks `eventType`.
    reactor.addSystemEventTrigger("before", "shutdown", before_shutdown)  # type: ignore[arg-type]
