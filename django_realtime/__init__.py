"""
django-realtime: chat rooms, notifications, presence and live data over
WebSocket and Server-Sent Events for Django sites.

This package holds what the apps `chat`, `notifications` and `presence`
share: settings (conf), errors, the REST base view, the channel layers, the
server adjustments, metrics and logging context. docs/integration.md says how
a site installs it.
"""

__version__ = "0.2.0"
