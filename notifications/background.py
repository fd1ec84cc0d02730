"""
Provides the offline reach's per-process loops (contract §11): the Web Push
sender (notifications.push) and the e-mail digest round
(notifications.digests), one of each per server process.

Why it is shaped so: docs/architecture.md, "notifications.background".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import weakref
from typing import Any

from asgiref.sync import SyncToAsync
from django.core.signals import request_started

from django_realtime.asyncdb import db
from django_realtime.conf import realtime_settings

from . import digests, push

logger = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 10.0


class Runner:
    """The two loops of one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.woken = asyncio.Event()
        self.tasks = [
            loop.create_task(self._push_loop(), name="offline-push"),
            loop.create_task(self._digest_loop(), name="offline-digests"),
        ]

    def wake(self) -> None:
        self.woken.set()

    async def _push_loop(self) -> None:
        http = push.client()
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(push.RECHECK_SECONDS):
                        await self.woken.wait()
                self.woken.clear()
                if not push.enabled():
                    continue
                try:
                    await push.send_due(http, db)
                except Exception:  # noqa: BLE001 - the loop outlives any one failure
                    logger.exception("push: a round failed")
                    await asyncio.sleep(push.RECHECK_SECONDS)
        finally:
            with contextlib.suppress(Exception):
                await http.aclose()

    async def _digest_loop(self) -> None:
        backoff = 0.0
        while True:
            pause = backoff or digests.poll_seconds()
            await asyncio.sleep(pause * random.uniform(0.8, 1.0))
            try:
                await db(digests.send_due)
            except Exception as exc:  # noqa: BLE001 - the mail server away: retried
                backoff = min(MAX_BACKOFF_SECONDS, max(1.0, backoff * 2))
                logger.warning("digests: sending failed (%r); retrying in %.0f s", exc, backoff)
            else:
                backoff = 0.0


_runners: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Runner] = weakref.WeakKeyDictionary()


def ensure_running(loop: asyncio.AbstractEventLoop) -> Runner | None:
    """This loop's runner, started if it was not (on the loop's own thread)."""
    if not realtime_settings.OFFLINE_REACH_IN_PROCESS:
        return None
    runner = _runners.get(loop)
    if runner is None or all(t.done() for t in runner.tasks):
        runner = _runners[loop] = Runner(loop)
    return runner


def server_loop() -> asyncio.AbstractEventLoop | None:
    """The ASGI server's event loop, from its own thread or one of its sync
    threads (asgiref's); None outside a server (a command, WSGI)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        pass
    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    return loop if loop is not None and loop.is_running() else None


def _wake(loop: asyncio.AbstractEventLoop) -> None:
    runner = _runners.get(loop)
    if runner is not None:
        runner.wake()


def wake() -> None:
    """Notifications were stored here: push them now (from any thread). Only
    a loop that runs a runner already is woken; the others' re-check (or the
    first request that starts them) finds the notifications in the queue."""
    loop = server_loop()
    if loop is None or _runners.get(loop) is None:
        return
    _call_on(loop, _wake)


def _on_request(**kwargs: Any) -> None:
    loop = server_loop()
    if loop is None or _runners.get(loop) is not None:
        return
    _call_on(loop, ensure_running)


def _call_on(loop: asyncio.AbstractEventLoop, fn: Any) -> None:
    """fn(loop) on `loop`: at once from that loop, else scheduled there."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        fn(loop)
    else:
        loop.call_soon_threadsafe(fn, loop)


def connect_signals() -> None:
    request_started.connect(_on_request, dispatch_uid="notifications.background")
