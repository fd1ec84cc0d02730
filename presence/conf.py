"""
Provides the presence settings, each read at call time, each with its one
default here (project/settings.py only lets the environment override them).

The numbers hang together: a connection's lease lives PRESENCE_TTL_SECONDS
after its process last refreshed it, and some process sweeps expired leases
every PRESENCE_SWEEP_SECONDS. So the users of a process that dies without a
word leave every presence list at most TTL + SWEEP after it died: 45 + 5 =
50 s with the defaults, inside the contract's 60 s.
"""

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Three heartbeats: a live connection survives two missed refreshes (a
    # Redis blip, a long pause of its process) before it is taken for dead.
    "PRESENCE_TTL_SECONDS": 45.0,
    "PRESENCE_HEARTBEAT_SECONDS": 15.0,
    # With the TTL, the worst case for a dead process's users (TTL + sweep);
    # a sweep that finds nothing expired costs one small script call.
    "PRESENCE_SWEEP_SECONDS": 5.0,
    # Every presence call to Redis is bounded by this; a consumer waits no
    # longer, and presence is then best-effort until Redis answers again.
    "PRESENCE_REDIS_TIMEOUT_SECONDS": 2.0,
    # Presence calls are short; a process needs a few connections, and a burst
    # of joins waits (up to the timeout) rather than opening hundreds.
    "PRESENCE_REDIS_MAX_CONNECTIONS": 20,
    # Every presence key starts with this, so several sites (or test runs) can
    # share one Redis.
    "PRESENCE_REDIS_PREFIX": "presence:",
    # A room's first diff after a quiet spell goes out at once; the diffs that
    # follow within this window are merged into one. A join storm in a room of
    # a thousand then costs one diff (fanned out to every member) per window
    # instead of one per join: a thousand joins were a million frames.
    "PRESENCE_DIFF_COALESCE_SECONDS": 0.5,
}


def value(name: str) -> Any:
    """The setting `name`, or its default when unset (None counts as unset)."""
    configured = getattr(settings, name, None)
    return DEFAULTS[name] if configured is None else configured


def ttl_seconds() -> float:
    return float(value("PRESENCE_TTL_SECONDS"))


def heartbeat_seconds() -> float:
    return float(value("PRESENCE_HEARTBEAT_SECONDS"))


def sweep_seconds() -> float:
    return float(value("PRESENCE_SWEEP_SECONDS"))


def redis_timeout_seconds() -> float:
    return float(value("PRESENCE_REDIS_TIMEOUT_SECONDS"))


def upkeep_timeout_seconds() -> float:
    """The bound on one heartbeat or sweep: a process holding thousands of
    connections refreshes them all in one pipeline, and a busy event loop
    reads the reply late. Two thirds of a heartbeat period still leaves the
    lease (three periods) two refreshes to spare."""
    return max(redis_timeout_seconds(), heartbeat_seconds() * 2 / 3)


def diff_coalesce_seconds() -> float:
    return float(value("PRESENCE_DIFF_COALESCE_SECONDS"))


def redis_max_connections() -> int:
    return int(value("PRESENCE_REDIS_MAX_CONNECTIONS"))


def redis_prefix() -> str:
    return str(value("PRESENCE_REDIS_PREFIX"))
