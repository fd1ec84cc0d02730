"""
Provides rate limits as sliding windows: `limiter.hit(key, rate)`.

Rates are strings such as "20/10s", "1/1s", "60/min" or "off". The window is
kept per process; the limits are meant to stop floods, which a per-process
count does, not to meter exact quotas.
"""

import threading
import time
from collections import deque

from django_realtime.errors import RateLimited
from django_realtime.rates import Rate, parse_rate

__all__ = ["Rate", "SlidingWindowLimiter", "limiter", "parse_rate"]


class SlidingWindowLimiter:
    """Counts hits per key over the last period; thread-safe, bounded memory."""

    def __init__(self, max_keys: int = 100_000):
        self._hits: dict[tuple, deque[float]] = {}
        self._lock = threading.Lock()
        self._max_keys = max_keys

    def hit(self, key: tuple, rate_text: str) -> None:
        """Record one hit, or raise RateLimited if the key is over its rate."""
        rate = parse_rate(rate_text)
        if rate is None:
            return
        now = time.monotonic()
        with self._lock:
            window = self._hits.get(key)
            if window is None:
                if len(self._hits) >= self._max_keys:
                    self._evict(now)
                window = self._hits[key] = deque()
            while window and window[0] <= now - rate.period_seconds:
                window.popleft()
            if len(window) >= rate.count:
                retry = window[0] + rate.period_seconds - now
                raise RateLimited(
                    f"too many requests: at most {rate.count} per "
                    f"{rate.period_seconds:g} s; retry in {retry:.1f} s",
                    retry_after_seconds=max(retry, 0.1),
                )
            window.append(now)

    def refund(self, key: tuple) -> None:
        """Take back the latest hit of `key` (it turned out not to count)."""
        with self._lock:
            window = self._hits.get(key)
            if window:
                window.pop()

    def _evict(self, now: float) -> None:
        # Drop windows whose newest hit is older than an hour; if that frees
        # nothing, drop everything (a flood of distinct keys is itself abuse).
        stale = [k for k, w in self._hits.items() if not w or w[-1] < now - 3600]
        for k in stale:
            del self._hits[k]
        if len(self._hits) >= self._max_keys:
            self._hits.clear()


limiter = SlidingWindowLimiter()
