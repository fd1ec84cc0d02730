"""
Provides the register of every private name of another library the package
relies on, and require(), the start-up check that they are still there (run
when chat.routing is imported, and as the system check realtime.E009): a
name gone, or a copied function whose upstream source changed, refuses to
start, naming it; nothing switches itself off. What each name is for:
docs/architecture.md, "Other libraries' internals" (daphne's own list is in
django_realtime.daphne_transport).
"""

import hashlib
import importlib
import inspect
from typing import Any

from django.core.exceptions import ImproperlyConfigured

# (module, attribute path, name): `name` must exist on the object at `path`.
# A path ending in `__init__` means an attribute its constructor sets (found
# in its source).
Name = tuple[str, str, str]

LAYER_INTERNALS: list[Name] = [
    ("channels_redis.pubsub", "RedisPubSubChannelLayer", "_get_layer"),
    ("channels_redis.pubsub", "RedisPubSubChannelLayer.__init__", "_layers"),
    ("channels_redis.pubsub", "RedisPubSubLoopLayer.__init__", "_shards"),
    # layers.ResilientRedisPubSubChannelLayer.new_channel: a channel on a shard that answers.
    ("channels_redis.pubsub", "RedisPubSubLoopLayer.__init__", "channels"),
    ("channels_redis.pubsub", "RedisPubSubLoopLayer.__init__", "prefix"),
    ("channels_redis.pubsub", "RedisPubSubLoopLayer", "_subscribe_to_channel"),
    ("channels_redis.pubsub", "RedisSingleShardConnection", "_do_receiving"),
    ("channels_redis.pubsub", "RedisSingleShardConnection", "_receive_message"),
    ("channels_redis.pubsub", "RedisSingleShardConnection", "_ensure_redis"),
    ("channels_redis.pubsub", "RedisSingleShardConnection.__init__", "_pubsub"),
    ("channels_redis.pubsub", "RedisSingleShardConnection.__init__", "_redis"),
    ("channels_redis.pubsub", "RedisSingleShardConnection.__init__", "host"),
    # layers._WatchedShard sends under the shard's lock and keeps its subscriptions.
    ("channels_redis.pubsub", "RedisSingleShardConnection.__init__", "_lock"),
    ("channels_redis.pubsub", "RedisSingleShardConnection.__init__", "_subscribed_to"),
    ("channels_redis.pubsub", "RedisSingleShardConnection", "_ensure_receiver"),
]
ASGIREF_INTERNALS: list[Name] = [
    ("asgiref.sync", "SyncToAsync", "thread_sensitive_context"),
    ("asgiref.sync", "SyncToAsync", "context_to_thread_executor"),
]
# What a function's source must still say (`self.<name>`): where upstream
# sets a name the package reads, or hashes what the package hashes alike.
SOURCE_INTERNALS: list[Name] = [
    # bus.send_after_commit: the loop a thread inside async_to_sync came from.
    ("asgiref.sync", "SyncToAsync.thread_handler", "threadlocal.main_event_loop"),
    # shards.layer_group_name: the list-based layer hashes the group itself.
    ("channels_redis.core", "RedisChannelLayer.group_add", "consistent_hash(group)"),
    # rest.exception_handler reads `_user`: the user, never authenticating again.
    ("rest_framework.request", "Request.user.fset", "_user"),
    # chat.views' login: Django's authenticate() takes the HttpRequest.
    ("rest_framework.request", "Request.__init__", "_request"),
]
CHANNELS_INTERNALS: list[Name] = [
    ("channels.consumer", "", "get_handler_name"),
    ("channels.consumer", "AsyncConsumer", "dispatch"),
    # servers.output_probe looks through SessionMiddleware's send to the server's.
    ("channels.sessions", "InstanceSessionWrapper.__init__", "real_send"),
]

# Functions copied and changed here, by the sha256 (first 16 hex digits) of
# the upstream source they were copied from.
COPIED: dict[tuple[str, str], str] = {
    # channels_redis 4.3.0; ours also treats a TimeoutError as an outage.
    ("channels_redis.pubsub", "RedisSingleShardConnection._do_receiving"): "a822736dcb875e43",
    # channels_redis 4.3.0; ours queue the call and send it with those queued
    # meanwhile (one pipeline of publishes, one SUBSCRIBE or UNSUBSCRIBE).
    ("channels_redis.pubsub", "RedisSingleShardConnection.publish"): "5a18093dbcb440f5",
    ("channels_redis.pubsub", "RedisSingleShardConnection.subscribe"): "173a8f40b17e4e28",
    ("channels_redis.pubsub", "RedisSingleShardConnection.unsubscribe"): "e2b9f0f1ff880674",
    # channels 4.3.2; ours leaves out `await aclose_old_connections()`.
    ("channels.consumer", "AsyncConsumer.dispatch"): "39f34e7d4fb0f655",
    # channels_redis 4.3.0: shards.shard_index is its ring, namespace
    # names a group's channel as it does.
    ("channels_redis.utils", "_consistent_hash"): "a67f87dec0b0b75d",
    ("channels_redis.pubsub", "RedisPubSubLoopLayer._get_group_channel_name"): "c3139bae61c673aa",
    # Django 5.2: chat.auth.origin_allowed applies its rule to a handshake.
    ("django.middleware.csrf", "CsrfViewMiddleware._origin_verified"): "c244e21ccaaa9f6f",
}


def _resolve(module_name: str, path: str) -> Any:
    target: Any = importlib.import_module(module_name)
    for part in filter(None, path.split(".")):
        target = getattr(target, part, None)
    return target


def missing(names: list[Name]) -> list[str]:
    """The dotted names of `names` that the installed versions do not have."""
    absent = []
    for module_name, path, name in names:
        target = _resolve(module_name, path)
        if path.endswith("__init__") or inspect.isfunction(target):
            # An attribute that method sets on `self`.
            try:
                found = target is not None and f"self.{name}" in inspect.getsource(target)
            except (OSError, TypeError):
                found = False
        else:
            found = target is not None and hasattr(target, name)
        if not found:
            absent.append(".".join(filter(None, (module_name, path, name))))
    return absent


def fingerprint(obj: Any) -> str:
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]


def changed_upstream() -> list[str]:
    """The copied functions whose upstream source is not the one copied."""
    changed = []
    for (module_name, path), expected in COPIED.items():
        target = _resolve(module_name, path)
        try:
            actual = fingerprint(target) if target is not None else "missing"
        except (OSError, TypeError):
            actual = "unreadable"
        if actual != expected:
            changed.append(f"{module_name}.{path} (source {actual}, copied from {expected})")
    return changed


def problems() -> list[str]:
    """Everything the installed versions no longer have of what the package
    relies on (daphne's own list is checked when daphne runs)."""
    return (
        missing(LAYER_INTERNALS)
        + missing(ASGIREF_INTERNALS)
        + missing(CHANNELS_INTERNALS)
        + missing(SOURCE_INTERNALS)
        + changed_upstream()
    )


def require() -> None:
    """Refuse to start, naming each problem, if there is any."""
    found = problems()
    if found:
        raise ImproperlyConfigured(
            "django-realtime relies on internals of channels_redis, asgiref, Channels, DRF "
            "and Django "
            f"that the installed versions no longer have: {'; '.join(found)}. Pin the "
            "versions in requirements.txt, or adapt the module named in "
            "django_realtime/internals.py and update its register."
        )
