"""
django-realtime: chat rooms, notifications, presence and live data over
WebSocket and Server-Sent Events for Django sites.

This package holds what the apps `chat`, `notifications` and `presence`
share: settings (conf), errors, the REST base view, the channel layers, the
server adjustments, metrics and logging context. docs/integration.md says how
a site installs it.
"""

from typing import Any

__version__ = "0.2.0"

__all__ = ["__version__", "html_stream"]


def __getattr__(name: str) -> Any:
    # Imported on first use: the root is imported before the apps are ready.
    if name == "html_stream":
        from .topics.html import html_stream

        return html_stream
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
