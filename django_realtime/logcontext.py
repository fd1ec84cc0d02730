"""
Provides structured logs: every line carries the user and the room it is
about, taken from context variables that the consumer (per connection and per
frame) and a middleware (per request) set, so no log call has to pass them.

LOG_FORMAT=json prints one JSON object per line; the default is plain text
with `user=… room=…` on every line.
"""

import json
import logging
from contextvars import ContextVar

log_user: ContextVar[str] = ContextVar("log_user", default="-")
log_room: ContextVar[str] = ContextVar("log_room", default="-")


class ContextFilter(logging.Filter):
    """Puts the current user and room on every record (an explicit `extra` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "user"):
            record.user = log_user.get()
        if not hasattr(record, "room"):
            record.room = log_room.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "user": getattr(record, "user", "-"),
            "room": getattr(record, "room", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class RequestContextMiddleware:
    """Sets the log context of an HTTP request: its user and the room in its URL."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        # Set, not reset afterwards: Django logs a 4xx or 5xx response after
        # the middleware has returned, and that line is about this request too.
        user = getattr(request, "user", None)
        log_user.set(str(user.pk) if user is not None and user.is_authenticated else "-")
        log_room.set("-")
        return self.get_response(request)

    @staticmethod
    def note_user(user) -> None:
        """For users authenticated inside the view (DRF tokens)."""
        if user is not None and user.is_authenticated:
            log_user.set(str(user.pk))

    def process_view(self, request, view_func, view_args, view_kwargs):
        log_room.set(str(view_kwargs.get("slug", "-"))[:64])
        return None
