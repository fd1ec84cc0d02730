"""
Provides the site's own names on a Redis server that other sites share.

(docs/architecture.md, "Why the modules are as they are")
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

from channels_redis.utils import decode_hosts
from django.conf import settings
from django.core.signals import setting_changed
from redis.asyncio.connection import parse_url

DEFAULT_PREFIX = "asgi"  # channels_redis' own
# The pub/sub layers whose channels carry the database numbers: the package's.
NAMESPACED_LAYERS = ("django_realtime.layers.ResilientRedisPubSubChannelLayer",)


def host_db(host: Any) -> int:
    """The database number of one channels_redis host entry (0 if it names none)."""
    if isinstance(host, dict):
        if "db" in host:
            return int(host["db"])
        address = host.get("address")
        return host_db(address) if isinstance(address, str) else 0
    if isinstance(host, str):
        try:
            return int(parse_url(host).get("db") or 0)
        except ValueError:
            return 0
    return 0


def channel_prefix(prefix: str, hosts: Any) -> str:
    """The prefix of a pub/sub layer's channel names: `prefix`, with the
    database numbers of its hosts unless they are all 0 (so a site on
    database 0 keeps the names it had)."""
    dbs = list(dict.fromkeys(host_db(host) for host in decode_hosts(hosts)))
    if dbs == [0]:
        return prefix
    return f"{prefix}.db{'-'.join(map(str, dbs))}"


@functools.cache
def default_layer() -> dict:
    """CHANNEL_LAYERS["default"] ({} if unset): the one place the package
    reads the setting, once (forgotten when it changes, as in tests)."""
    layers = getattr(settings, "CHANNEL_LAYERS", None)
    layer = (layers if isinstance(layers, dict) else {}).get("default") or {}
    return layer if isinstance(layer, dict) else {}


@functools.cache
def layer_prefix() -> str:
    """The `prefix` of the default channel layer's CONFIG ("asgi" unless set)."""
    return str((default_layer().get("CONFIG") or {}).get("prefix") or DEFAULT_PREFIX)


@functools.cache
def group_channel_prefix() -> str:
    """What the default channel layer puts before `__group__<group>`: the
    package's pub/sub layer, channel_prefix(); channels_redis' own, its prefix."""
    layer = default_layer()
    prefix = layer_prefix()
    if str(layer.get("BACKEND", "")) in NAMESPACED_LAYERS:
        return channel_prefix(prefix, (layer.get("CONFIG") or {}).get("hosts"))
    return prefix


@functools.cache
def group_hash_prefix() -> str:
    """What the default channel layer puts before a group's name when it
    hashes it to one of its hosts: the pub/sub layers hash the group's
    channel (`<group_channel_prefix>__group__<group>`), the list-based ones
    the group itself (""). Any other layer (in-memory, in tests) counts as
    the package's default, pub/sub."""
    backend = str(default_layer().get("BACKEND", ""))
    if backend.endswith("RedisChannelLayer") and "PubSub" not in backend:
        return ""
    return f"{group_channel_prefix()}__group__"


@functools.cache
def key_prefix() -> str:
    """What starts every Redis key of the package: "" with the default layer
    prefix, else that prefix and a colon (sites on one database number)."""
    prefix = layer_prefix()
    return "" if prefix == DEFAULT_PREFIX else f"{prefix}:"


def site_marker() -> tuple[str, str]:
    """The key naming which site uses this Redis database under this prefix,
    and this site's value for it (its default database, hashed)."""
    database = settings.DATABASES.get("default", {})
    identity = "|".join(str(database.get(part, "")) for part in ("ENGINE", "HOST", "PORT", "NAME"))
    return f"{key_prefix()}realtime:site", hashlib.sha256(identity.encode()).hexdigest()[:16]


def _forget(*, setting: str, **kwargs: Any) -> None:
    if setting in {"CHANNEL_LAYERS", "REALTIME"}:
        default_layer.cache_clear()
        layer_prefix.cache_clear()
        group_channel_prefix.cache_clear()
        group_hash_prefix.cache_clear()
        key_prefix.cache_clear()


setting_changed.connect(_forget)
