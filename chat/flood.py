"""
Provides FloodControl: a connection's RATE_LIMITED refusals counted
(WS_FLOOD_CLOSE_RATE), so that a client which keeps sending past its limits
is closed (4408) rather than answered forever.
"""

import logging
from typing import Any

from django_realtime import metrics
from django_realtime.conf import realtime_settings
from django_realtime.errors import RateLimited
from django_realtime.limits import SlidingWindowLimiter

# The connection's log lines keep the consumer's logger.
logger = logging.getLogger("chat.consumers")


class FloodControl:
    """A mixin for a WebSocket consumer: its refusals, in a window of its own."""

    user: Any

    def start_flood_control(self) -> None:
        """Start counting (call once, in connect)."""
        self.refusals = SlidingWindowLimiter(max_keys=1)

    def _flooding(self, frame_type: str) -> bool:
        """Count a RATE_LIMITED refusal of a `frame_type` frame; True once
        there were too many (the caller closes with 4408)."""
        metrics.RATE_LIMITED.labels(frame_type).inc()
        try:
            self.refusals.hit(("rate_limited",), realtime_settings.WS_FLOOD_CLOSE_RATE)
        except RateLimited:
            logger.info("closing a flooding connection of user %s (4408)", self.user.pk)
            return True
        return False
