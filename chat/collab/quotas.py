"""
Provides the per-user rate of document bytes (DOCS_USER_BYTES_RATE, e.g.
"1048576/60s": at most that many bytes of updates per user per period, all
documents and processes together): `await spend(user_id, size)` raises
OverQuota past it, before anything is stored.

(docs/architecture.md, "Why the modules are as they are")
"""

from __future__ import annotations

import math
import time

from django_realtime import limits, redisconn
from django_realtime.conf import realtime_settings
from django_realtime.rates import parse_rate

from .services import OverQuota

# KEYS[1] the user's bucket. ARGV: capacity (bytes), period ms, this update's bytes.
# -> {1, 0} spent, or {0, ms until it would fit}
SPEND = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cap = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local held = redis.call('HMGET', KEYS[1], 'level', 'at')
local level = tonumber(held[1]) or 0
local at = tonumber(held[2]) or now
level = math.max(0, level - (now - at) * cap / period)
if level + cost > cap then
  return {0, math.ceil((level + cost - cap) * period / cap)}
end
redis.call('HSET', KEYS[1], 'level', math.floor(level + cost), 'at', now)
redis.call('PEXPIRE', KEYS[1], period)
return {1, 0}
"""

_SPEND = redisconn.Script(SPEND)
# This process's buckets (user id -> level, at), when Redis does not answer.
_local: dict[int, tuple[float, float]] = {}


def _refused(retry_seconds: float) -> OverQuota:
    return OverQuota(
        f"document writes over {realtime_settings.DOCS_USER_BYTES_RATE} bytes;"
        f" retry in {retry_seconds:.1f} s",
        retry_after_seconds=max(retry_seconds, 0.1),
    )


def _spend_here(user_id: int, cap: int, period: float, cost: int) -> None:
    now = time.monotonic()
    level, at = _local.get(user_id, (0.0, now))
    level = max(0.0, level - (now - at) * cap / period)
    if level + cost > cap:
        raise _refused((level + cost - cap) * period / cap)
    if len(_local) > 100_000:
        _local.clear()  # a flood of users: forget the oldest buckets (all of them)
    _local[user_id] = (level + cost, now)


async def spend(user_id: int, size: int) -> None:
    """Count `size` bytes of updates against the user's rate; OverQuota past it."""
    rate = parse_rate(str(realtime_settings.DOCS_USER_BYTES_RATE))
    if rate is None:
        return
    cap, period = rate.count, rate.period_seconds
    if size > cap:
        raise _refused(period)
    args = [cap, math.ceil(period * 1000), size]
    reply = await limits.arun_shared(_SPEND, "docbytes", user_id, args)
    if reply is None:  # no Redis, or it did not answer: this process counts
        return _spend_here(user_id, cap, period, size)
    taken, wait_ms = reply
    if not taken:
        raise _refused(int(wait_ms) / 1000)
    return None
