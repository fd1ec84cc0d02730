"""
Provides the limits that count across every process once the package has a
Redis (contract §1): sliding-window rates (`limiter`) and per-user slots for
the WebSocket and SSE caps (`Slots`), each decision one Lua script, failing
open to the process's own count while Redis is away. Shards and leases:
docs/architecture.md, "limits".
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any

from . import metrics, namespace, redisconn
from .background import spawn
from .conf import realtime_settings, redis_urls
from .errors import RateLimited
from .rates import parse_rate

logger = logging.getLogger(__name__)

# How often a fail-open is logged (each is counted).
LOG_EVERY_SECONDS = 30.0

# KEYS[1] the window (a sorted set of hits). ARGV: period ms, limit, a member.
# -> {1, 0} taken, or {0, ms until the oldest hit leaves the window}
HIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local period = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, tonumber(oldest[2]) + period - now}
end
redis.call('ZADD', KEYS[1], now, ARGV[3] .. ':' .. now)
redis.call('PEXPIRE', KEYS[1], period)
return {1, 0}
"""

# KEYS[1] the user's slots. ARGV: member, cap (0: none, a renewal), lease ms.
# -> 1 held, 0 refused
TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local cap = tonumber(ARGV[2])
if cap > 0 and not redis.call('ZSCORE', KEYS[1], ARGV[1])
   and redis.call('ZCARD', KEYS[1]) >= cap then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

_HIT = redisconn.Script(HIT)
_TAKE = redisconn.Script(TAKE)
# Slot renewals per pipeline (Slots.renew_many).
RENEW_BATCH = 500
_last_logged: dict[str, float] = {}


def _key(*parts: Any) -> str:
    return (
        namespace.key_prefix() + realtime_settings.LIMITS_REDIS_PREFIX + ":".join(map(str, parts))
    )


def _rate_url(name: str) -> str:
    """The shard of the rate window `name` ("" without Redis)."""
    urls = redis_urls()
    return redisconn.pick(urls, redisconn.shard_index(name, len(urls))) if urls else ""


def _slot_url(user_id: int) -> str:
    """The shard of a user's slots ("" without Redis)."""
    urls = redis_urls()
    return redisconn.pick(urls, redisconn.user_shard(user_id, len(urls))) if urls else ""


def _failed_open(kind: str, exc: BaseException) -> None:
    metrics.LIMITS_FAIL_OPEN.labels(kind).inc()
    now = time.monotonic()
    if now - _last_logged.get(kind, -LOG_EVERY_SECONDS) >= LOG_EVERY_SECONDS:
        _last_logged[kind] = now
        logger.warning(
            "limits: Redis did not answer (%r); %s counts per process until it does", exc, kind
        )


def _member() -> str:
    """A hit's name in the window, unique across processes and hosts: the
    process's random name and a count (no system call per hit)."""
    return f"{_PROCESS}{next(_hits)}"


def _name_process() -> None:
    global _PROCESS
    _PROCESS = secrets.token_hex(6) + ":"


_PROCESS = ""
_name_process()
os.register_at_fork(after_in_child=_name_process)  # a pre-forked worker is a process of its own
_hits = itertools.count()


def _refused(rate_count: int, period: float, retry: float) -> RateLimited:
    return RateLimited(
        f"too many requests: at most {rate_count} per {period:g} s; retry in {retry:.1f} s",
        retry_after_seconds=max(retry, 0.1),
    )


# --- rate limits ------------------------------------------------------------------------
class SlidingWindowLimiter:
    """Counts hits per key over the last period in this process; thread-safe,
    bounded memory."""

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
                raise _refused(rate.count, rate.period_seconds, retry)
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


class SharedLimiter:
    """Sliding windows in Redis when the package has one, else `local`."""

    def __init__(self) -> None:
        self.local = SlidingWindowLimiter()

    def hit(self, key: tuple, rate_text: str) -> None:
        """One hit from synchronous code; RateLimited when over the rate."""
        rate = parse_rate(rate_text)
        name = _key("rate", *key)
        url = _rate_url(name)
        if rate is None or not url:
            return self.local.hit(key, rate_text)
        try:
            taken, wait_ms = _HIT.run(
                url, [name], [int(rate.period_seconds * 1000), rate.count, _member()]
            )
        except redisconn.ERRORS as exc:
            _failed_open("rate", exc)
            return self.local.hit(key, rate_text)
        if not taken:
            raise _refused(rate.count, rate.period_seconds, int(wait_ms) / 1000)
        return None

    async def ahit(self, key: tuple, rate_text: str) -> None:
        """hit() from the event loop."""
        rate = parse_rate(rate_text)
        name = _key("rate", *key)
        url = _rate_url(name)
        if rate is None or not url:
            return self.local.hit(key, rate_text)
        try:
            taken, wait_ms = await _HIT.arun(
                url, [name], [int(rate.period_seconds * 1000), rate.count, _member()]
            )
        except redisconn.ERRORS as exc:
            _failed_open("rate", exc)
            return self.local.hit(key, rate_text)
        if not taken:
            raise _refused(rate.count, rate.period_seconds, int(wait_ms) / 1000)
        return None

    def refund(self, key: tuple) -> None:
        """Take back the latest hit of `key`; from the event loop it is sent
        without waiting (the caller's answer never waits on a refund)."""
        name = _key("rate", *key)
        url = _rate_url(name)
        if not url:
            return self.local.refund(key)
        self.local.refund(key)  # a hit counted here while Redis was away
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            try:
                redisconn.sync_client(url).zpopmax(name)
            except redisconn.ERRORS as exc:
                _failed_open("rate", exc)
            return None
        spawn(_arefund(url, name))
        return None


async def _arefund(url: str, name: str) -> None:
    try:
        async with asyncio.timeout(redisconn.TIMEOUT_SECONDS):
            await redisconn.async_client(url).zpopmax(name)
    except redisconn.ERRORS as exc:
        _failed_open("rate", exc)


limiter = SharedLimiter()


async def arun_shared(script: redisconn.Script, kind: str, owner: Any, args: list[Any]) -> Any:
    """Run `script` on the shared key of (`kind`, `owner`), on the shard of its
    name, for a limit of another module's own (chat.collab.quotas): its reply;
    None without Redis, or while Redis does not answer (a fail-open, counted
    and logged as the limits' own): the caller then counts in the process."""
    name = _key(kind, owner)
    url = _rate_url(name)
    if not url:
        return None
    try:
        return await script.arun(url, [name], args)
    except redisconn.ERRORS as exc:
        _failed_open(kind, exc)
        return None


# --- slots ------------------------------------------------------------------------------
def lease_seconds() -> float:
    """A slot nobody renews is free again after this (a dead process's)."""
    return max(90.0, 3 * float(realtime_settings.GROUP_REFRESH_SECONDS))


class Slots:
    """Per-user open connections (or streams) of one kind, across processes."""

    def __init__(self, kind: str):
        self.kind = kind
        self.local: Counter[int] = Counter()  # this process's, whatever Redis says
        _all_slots.append(self)

    async def take(self, user_id: int, member: str, cap: int) -> bool:
        """Hold a slot for `member` unless the user has `cap` already (0: no cap)."""
        url = _slot_url(user_id)
        if url:
            try:
                held = await _TAKE.arun(
                    url,
                    [_key(self.kind, user_id)],
                    [member, cap, int(lease_seconds() * 1000)],
                )
            except redisconn.ERRORS as exc:
                _failed_open(self.kind, exc)
            else:
                if not held:
                    return False
                self.local[user_id] += 1
                return True
        if cap and self.local[user_id] >= cap:
            return False
        self.local[user_id] += 1
        return True

    async def renew(self, user_id: int, member: str) -> None:
        """Keep the lease (and restore it to a Redis that lost it)."""
        await self.renew_many([(user_id, member)])

    async def renew_many(self, held: list[tuple[int, str]]) -> None:
        """renew() for each (user id, member), RENEW_BATCH per pipeline and
        round trip: a process renews thousands of slots in a few calls,
        serving its sockets between them. Fails open, as renew()."""
        by_url: dict[str, list[tuple[int, str]]] = {}
        for user_id, member in held:
            url = _slot_url(user_id)
            if url:
                by_url.setdefault(url, []).append((user_id, member))
        lease_ms = int(lease_seconds() * 1000)
        for url, slots in by_url.items():
            for i in range(0, len(slots), RENEW_BATCH):
                calls = [
                    ([_key(self.kind, user_id)], [member, 0, lease_ms])
                    for user_id, member in slots[i : i + RENEW_BATCH]
                ]
                try:
                    await _TAKE.arun_many(url, calls)
                except redisconn.ERRORS as exc:
                    _failed_open(self.kind, exc)
                    break  # the rest of this Redis's: at the next refresh

    async def give_back(self, user_id: int, member: str) -> None:
        self.local[user_id] -= 1
        if self.local[user_id] <= 0:
            del self.local[user_id]
        url = _slot_url(user_id)
        if not url:
            return
        try:
            async with asyncio.timeout(redisconn.TIMEOUT_SECONDS):
                await redisconn.async_client(url).zrem(_key(self.kind, user_id), member)
        except redisconn.ERRORS as exc:
            _failed_open(self.kind, exc)  # the lease runs out by itself

    def held(self, user_id: int) -> int:
        """This process's slots of the user."""
        return self.local.get(user_id, 0)


_all_slots: list[Slots] = []

# KEYS: users' slot sets (of one shard). -> per key 1 if it holds a live lease, else 0.
LIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('ZCOUNT', key, '(' .. now, '+inf') > 0 and 1 or 0
end
return out
"""
_LIVE = redisconn.Script(LIVE)


def slot_holders(kinds: tuple[str, ...], user_ids: list[int]) -> set[int]:
    """The users among `user_ids` holding a live slot of any of `kinds`
    (every open WebSocket holds a "ws" slot, every SSE stream an "sse" one)
    on any process: Redis's leases, RENEW_BATCH keys per script call; this
    process's own count without Redis. Read-only. Raises redisconn.ERRORS
    when Redis does not answer (the caller cannot tell, so must not guess)."""
    if not redis_urls():
        return {uid for uid in user_ids if any(s.held(uid) for s in _all_slots if s.kind in kinds)}
    by_url: dict[str, list[int]] = {}
    for user_id in user_ids:
        by_url.setdefault(_slot_url(user_id), []).append(user_id)
    holders: set[int] = set()
    keys_per_user = len(kinds)
    for url, ids in by_url.items():
        step = max(1, RENEW_BATCH // keys_per_user)
        for i in range(0, len(ids), step):
            part = ids[i : i + step]
            keys = [_key(kind, uid) for uid in part for kind in kinds]
            live = _LIVE.run(url, keys, [])
            for j, uid in enumerate(part):
                if any(live[j * keys_per_user : (j + 1) * keys_per_user]):
                    holders.add(uid)
    return holders


def users_connected(*, user_ids: Iterable[int]) -> set[int]:
    """The users among `user_ids` with an open WebSocket (/ws/ or a
    document's) or SSE stream on any process: "offline" for the offline
    channels (notifications.push, notifications.digests) is the opposite,
    not merely "away". Raises redisconn.ERRORS when Redis does not answer."""
    return slot_holders(("ws", "sse"), sorted(set(user_ids)))
