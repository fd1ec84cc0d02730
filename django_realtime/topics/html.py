"""
Provides `html_stream(topic)`: Turbo Stream actions rendered once with a
Django template and published on a topic (contract §10, docs/integration.md),
which every open page showing the topic ({% realtime_stream %}) applies.

(docs/architecture.md, "Why the modules are as they are")
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.db import DEFAULT_DB_ALIAS, transaction
from django.template.loader import render_to_string

from .. import namespace, redisconn
from ..conf import realtime_settings
from . import names
from .fragments import fragment_data
from .history import RedisHistory, history
from .publishing import check, publish, publish_now

logger = logging.getLogger(__name__)

# Refreshes of a topic within this long are sent once: the first at once,
# the others as one more a window later (so the last change is seen).
REFRESH_WINDOW_SECONDS = 1.0


def render_fragment(
    *, template: str | None = None, context: dict | None = None, html: str | None = None
) -> str:
    """The fragment's HTML: `template` rendered with `context` (autoescaped),
    or `html` as given."""
    if (template is None) == (html is None):
        raise TypeError("give either template= or html=")
    if html is not None:
        return str(html)
    return render_to_string(template, context or {})  # type: ignore[arg-type]


class HtmlStream:
    """Turbo Stream actions on one topic; each returns the publication's
    offset (None inside a transaction until it commits)."""

    def __init__(self, topic: str, *, using: str = DEFAULT_DB_ALIAS):
        names.parse(topic)  # a bad name or an unknown namespace fails here
        self.topic = topic
        self.using = using

    def _send(
        self,
        action: str,
        target: str,
        *,
        template: str | None = None,
        context: dict | None = None,
        html: str | None = None,
    ) -> int | None:
        """Render once (template=, context=; or html= as given) and publish."""
        if not isinstance(target, str) or not target:
            raise TypeError("target is a DOM id (a non-empty string)")
        body = None
        if action != "remove":
            body = render_fragment(template=template, context=context, html=html)
        return publish(self.topic, fragment_data(action, target, body), using=self.using)

    def append(self, target: str, **fragment: Any) -> int | None:
        """Add the fragment at the end of the element `target`."""
        return self._send("append", target, **fragment)

    def prepend(self, target: str, **fragment: Any) -> int | None:
        """Add the fragment at the start of `target`."""
        return self._send("prepend", target, **fragment)

    def replace(self, target: str, **fragment: Any) -> int | None:
        """Put the fragment in the place of `target`."""
        return self._send("replace", target, **fragment)

    def update(self, target: str, **fragment: Any) -> int | None:
        """Make the fragment `target`'s content."""
        return self._send("update", target, **fragment)

    def before(self, target: str, **fragment: Any) -> int | None:
        """Add the fragment before `target`."""
        return self._send("before", target, **fragment)

    def after(self, target: str, **fragment: Any) -> int | None:
        """Add the fragment after `target`."""
        return self._send("after", target, **fragment)

    def remove(self, target: str) -> int | None:
        return self._send("remove", target)

    def refresh(self) -> int | None:
        """Every page on the topic fetches itself again (Turbo morphs it);
        refreshes within REFRESH_WINDOW_SECONDS are sent once."""
        check(self.topic, fragment_data("refresh"), None, None)
        if transaction.get_connection(self.using).in_atomic_block:
            transaction.on_commit(
                lambda: refreshes.request(self.topic), using=self.using, robust=True
            )
            return None
        return refreshes.request(self.topic)


def html_stream(topic: str) -> HtmlStream:
    """The Turbo Stream actions of `topic` (contract §10)."""
    return HtmlStream(topic)


class Refreshes:
    """The refresh debounce: at most one refresh per topic per window, across
    processes when the history is in Redis, plus one a window later for the
    ones it held back (from this process), so the last change is seen."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last: dict[str, float] = {}
        self.pending: dict[str, threading.Timer] = {}

    def _claim(self, topic: str) -> bool:
        now = time.monotonic()
        with self.lock:
            if now - self.last.get(topic, -1e9) < REFRESH_WINDOW_SECONDS:
                return False
            self.last[topic] = now
        store = history()
        if not isinstance(store, RedisHistory):
            return True
        key = f"{namespace.key_prefix()}{realtime_settings.TOPICS_REDIS_PREFIX}{{{topic}}}:refresh"
        try:
            client = redisconn.sync_client(store.url_of(topic))
            return bool(client.set(key, "1", nx=True, px=int(REFRESH_WINDOW_SECONDS * 1000)))
        except redisconn.ERRORS:
            return True  # no shared window: this process's own still holds

    def request(self, topic: str) -> int | None:
        """The refresh's offset if it went out now; None if it was held back."""
        if self._claim(topic):
            return publish_now(topic, fragment_data("refresh")).publication.offset
        with self.lock:
            if topic not in self.pending:
                timer = threading.Timer(REFRESH_WINDOW_SECONDS, self._trailing, args=(topic,))
                self.pending[topic] = timer
                timer.start()
        return None

    def _trailing(self, topic: str) -> None:
        with self.lock:
            self.pending.pop(topic, None)
            self.last[topic] = time.monotonic()
        try:
            publish_now(topic, fragment_data("refresh"))
        except Exception:  # noqa: BLE001 - a timer thread: log, never raise
            logger.exception("a held-back refresh of %s could not be published", topic)


refreshes = Refreshes()
