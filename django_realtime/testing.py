"""
Provides `capture()`: what a site's own tests published, notified and sent,
as `django.core.mail.outbox` holds what they mailed. Use: docs/integration.md,
"Ten-minute start"; how: docs/architecture.md, "django_realtime.testing".
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.test import TestCase

from . import signals


@dataclass(frozen=True)
class Publication:
    """One publication as subscribers receive it."""

    topic: str
    data: Any
    offset: int
    key: str | None = None


@dataclass
class Captured:
    """What was published (`Publication`s), notified (the stored
    `notifications.models.Notification` rows) and sent (chat message frames
    as WebSocket clients receive them: `room`, `seq`, `user`, `content`, …)."""

    publications: list[Publication] = field(default_factory=list)
    notifications: list[Any] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)

    def _published(self, topic: str, data: Any, offset: int, key: Any = None, **_: Any) -> None:
        self.publications.append(Publication(topic=topic, data=data, offset=offset, key=key))

    def _notified(self, notifications: list[Any], **_: Any) -> None:
        self.notifications.extend(notifications)

    def _sent(self, message: dict[str, Any], **_: Any) -> None:
        self.messages.append(message)


class capture:  # noqa: N801 - used as a function, like contextlib's
    """Record publications, notifications and chat messages while open
    (`with capture() as captured:` or `async with`). `using`: the database
    whose uncommitted test transaction the block's end stands in for."""

    def __init__(self, *, using: str = DEFAULT_DB_ALIAS):
        self.using = using
        self.captured = Captured()
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Captured:
        connections_ = (
            (signals.published, self.captured._published),
            (signals.notified, self.captured._notified),
            (signals.message_sent, self.captured._sent),
        )
        for signal, receiver in connections_:
            signal.connect(receiver, weak=False)
            self._stack.callback(signal.disconnect, receiver)
        if connections[self.using].in_atomic_block:
            # Django's TestCase: nothing commits, so the end of the block does.
            self._stack.enter_context(
                TestCase.captureOnCommitCallbacks(using=self.using, execute=True)
            )
        return self.captured

    def __exit__(self, *exc_info: Any) -> None:
        self._stack.__exit__(*exc_info)

    async def __aenter__(self) -> Captured:
        return self.__enter__()

    async def __aexit__(self, *exc_info: Any) -> None:
        self.__exit__(*exc_info)
