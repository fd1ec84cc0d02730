"""
django-realtime: chat rooms, notifications, presence and live data over
WebSocket and Server-Sent Events for Django sites.

The site-facing API is this one import (docs/integration.md):

    from django_realtime import publish, apublish, notify, notify_many, broadcast_model, html_stream

(docs/architecture.md, "Why the modules are as they are")
"""

from importlib import import_module
from typing import Any

__version__ = "0.2.0"

__all__ = [
    "__version__",
    "apublish",
    "broadcast_model",
    "html_stream",
    "notify",
    "notify_many",
    "publish",
]

# Imported on first use: the root is imported before the apps are ready.
_LAZY = {
    "apublish": "django_realtime.topics.publishing",
    "broadcast_model": "django_realtime.topics.broadcast",
    "html_stream": "django_realtime.topics.html",
    "notify": "notifications.services",
    "notify_many": "notifications.services",
    "publish": "django_realtime.topics.publishing",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
