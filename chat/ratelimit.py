"""
Provides chat's rate limits: `limiter` (django_realtime.limits), which
counts across every process once the package has a Redis.

Rates are strings such as "20/10s", "1/1s", "60/min" or "off".
"""

from django_realtime.limits import SlidingWindowLimiter, limiter
from django_realtime.rates import Rate, parse_rate

__all__ = ["Rate", "SlidingWindowLimiter", "limiter", "parse_rate"]
