"""
Provides the presence settings, each read at call time from REALTIME, each
with its one default in django_realtime.conf.

The numbers hang together: a connection's lease lives PRESENCE_TTL_SECONDS
after its process last refreshed it, and some process sweeps expired leases
every PRESENCE_SWEEP_SECONDS. So the users of a process that dies without a
word leave every presence list at most TTL + SWEEP after it died: 45 + 5 =
50 s with the defaults, inside the contract's 60 s.
"""

from typing import Any

from django_realtime import namespace
from django_realtime.conf import realtime_settings


def value(name: str) -> Any:
    """The setting `name` (REALTIME[name], or its default in django_realtime.conf)."""
    return getattr(realtime_settings, name)


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
    return namespace.key_prefix() + str(value("PRESENCE_REDIS_PREFIX"))
