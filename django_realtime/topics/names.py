"""
Provides topic names and namespaces: `parse(topic)` checks a name and finds
its namespace, `register_namespace()` declares one in code, and
`REALTIME["TOPICS"]` declares them in settings (docs/topics.md).

A namespace says who may subscribe, who may publish over HTTP, how much
history its topics keep and how fast a subscriber may be sent them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from ..conf import realtime_settings
from ..errors import BadRequest, NotFound
from ..rates import Rate, parse_rate

MAX_TOPIC_CHARS = 100
_PART = r"[A-Za-z0-9._-]+"
_TOPIC_RE = re.compile(rf"^({_PART}):({_PART})$")

Rule = Callable[[Any, str], bool]


def _authenticated(user: Any, topic: str) -> bool:
    return bool(user is not None and user.is_authenticated)


def _staff(user: Any, topic: str) -> bool:
    return bool(user is not None and user.is_authenticated and user.is_staff)


@dataclass(frozen=True)
class Namespace:
    name: str
    subscribe: Rule = _authenticated
    publish: Rule = _staff
    history_size: int = 100
    history_ttl: float = 300.0
    max_rate: Rate | None = None

    def may_subscribe(self, user: Any, topic: str) -> bool:
        return bool(self.subscribe(user, topic))

    def may_publish(self, user: Any, topic: str) -> bool:
        return bool(self.publish(user, topic))


OPTIONS = {"subscribe", "publish", "history_size", "history_ttl", "max_rate"}

_registered: dict[str, Namespace] = {}


def _rule(value: Any, default: Rule, what: str) -> Rule:
    if value is None:
        return default
    if isinstance(value, str):
        value = import_string(value)
    if not callable(value):
        raise ImproperlyConfigured(f"{what} must be a callable (user, topic) -> bool or its path")
    return value


def build(name: str, options: dict[str, Any]) -> Namespace:
    """A Namespace from its options, or ImproperlyConfigured saying what is wrong."""
    if not re.fullmatch(_PART, name):
        raise ImproperlyConfigured(f"namespace {name!r}: use ASCII letters, digits and ._-")
    unknown = set(options) - OPTIONS
    if unknown:
        raise ImproperlyConfigured(
            f"namespace {name!r}: unknown option(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(OPTIONS))}"
        )
    size = options.get("history_size", 100)
    ttl = options.get("history_ttl", 300)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ImproperlyConfigured(f"namespace {name!r}: history_size must be an integer >= 0")
    if not isinstance(ttl, int | float) or isinstance(ttl, bool) or ttl <= 0:
        raise ImproperlyConfigured(f"namespace {name!r}: history_ttl must be seconds > 0")
    max_rate = options.get("max_rate")
    try:
        rate = parse_rate(max_rate) if isinstance(max_rate, str) else None
    except ValueError as exc:
        raise ImproperlyConfigured(f"namespace {name!r}: {exc}") from None
    if max_rate is not None and not isinstance(max_rate, str):
        raise ImproperlyConfigured(f"namespace {name!r}: max_rate is a string such as '10/1s'")
    return Namespace(
        name=name,
        subscribe=_rule(options.get("subscribe"), _authenticated, f"{name}.subscribe"),
        publish=_rule(options.get("publish"), _staff, f"{name}.publish"),
        history_size=size,
        history_ttl=float(ttl),
        max_rate=rate,
    )


def register_namespace(name: str, **options: Any) -> Namespace:
    """Declare a namespace in code (an AppConfig.ready); settings win over it."""
    namespace = build(name, options)
    _registered[name] = namespace
    return namespace


_configured: tuple[int, dict[str, Namespace]] | None = None


def namespaces() -> dict[str, Namespace]:
    """Every namespace: registered in code, then REALTIME["TOPICS"] on top."""
    global _configured
    declared = realtime_settings.TOPICS
    if _configured is None or _configured[0] != id(declared):
        built = {name: build(name, dict(options or {})) for name, options in declared.items()}
        _configured = (id(declared), built)
    return {**_registered, **_configured[1]}


def check_name(topic: Any) -> tuple[str, str]:
    """(namespace, name) of a well-formed topic, or BadRequest."""
    if not isinstance(topic, str) or len(topic) > MAX_TOPIC_CHARS:
        raise BadRequest(f"'topic' must be a string of at most {MAX_TOPIC_CHARS} characters")
    match = _TOPIC_RE.match(topic)
    if match is None:
        raise BadRequest(
            "a topic is 'namespace:name' in ASCII letters, digits and ._- (e.g. 'public:rooms')"
        )
    return match.group(1), match.group(2)


def unknown(topic: str) -> NotFound:
    """The one refusal for an unknown namespace and for one the user may not
    subscribe to, so a refusal tells nothing about what exists."""
    return NotFound(f"no topic {topic!r}")


def parse(topic: Any) -> Namespace:
    """The namespace of a well-formed topic; BadRequest or NotFound."""
    namespace, _ = check_name(topic)
    found = namespaces().get(namespace)
    if found is None:
        raise unknown(topic)
    return found
