"""
Provides the system checks `manage.py check` runs for the package (registered
by chat's AppConfig.ready): what a site is missing or has set unsafely, each with
an id (`realtime.E…` errors stop the server, `realtime.W…` warnings do not)
and a hint that says what to change. docs/integration.md lists them.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

from . import internals, namespace, redisconn
from .conf import DEFAULTS, layer_redis_urls, redis_urls, user_settings

# channels_redis' core layer blocks on BZPOPMIN for 5 s; a Redis read timeout
# at or below that ends every idle consumer's receive (channels_redis#422).
BLOCKING_POP_SECONDS = 5

REQUIRED_APPS = {
    "channels": "realtime.E001",
    "rest_framework": "realtime.E002",
    "rest_framework.authtoken": "realtime.E003",
    "chat": "realtime.E004",
    "notifications": "realtime.E004",
    "presence": "realtime.E004",
}
STOCK_LAYERS = {
    "channels_redis.core.RedisChannelLayer": "django_realtime.layers.ResilientRedisChannelLayer",
    "channels_redis.pubsub.RedisPubSubChannelLayer": (
        "django_realtime.layers.ResilientRedisPubSubChannelLayer"
    ),
}


def check_installed_apps(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    return [
        Error(
            f"'{name}' is not in INSTALLED_APPS; django-realtime needs it.",
            hint=f'Add "{name}" to INSTALLED_APPS (docs/integration.md, step 2).',
            id=check_id,
        )
        for name, check_id in REQUIRED_APPS.items()
        if not apps.is_installed(name)
    ]


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    realtime = getattr(settings, "REALTIME", {})
    if not isinstance(realtime, dict):
        return [
            Error(
                f"REALTIME must be a dict, not {type(realtime).__name__}.",
                hint="REALTIME = {} keeps every default.",
                id="realtime.E005",
            )
        ]
    unknown = sorted(set(realtime) - set(DEFAULTS))
    if unknown:
        messages.append(
            Warning(
                f"REALTIME has keys the package does not know: {', '.join(unknown)}.",
                hint="A misspelt key is ignored; docs/integration.md lists the keys.",
                id="realtime.W001",
            )
        )
    if not getattr(settings, "ASGI_APPLICATION", None):
        messages.append(
            Error(
                "ASGI_APPLICATION is not set; Channels cannot find the WebSocket application.",
                hint='ASGI_APPLICATION = "mysite.asgi.application" (docs/integration.md).',
                id="realtime.E006",
            )
        )
    return messages


def check_channel_layer(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    layer = namespace.default_layer()
    if not layer:
        return [
            Error(
                "CHANNEL_LAYERS has no 'default' layer: nothing carries events to sockets.",
                hint='CHANNEL_LAYERS = {"default": {"BACKEND": '
                '"channels.layers.InMemoryChannelLayer"}} for one process; Redis for more.',
                id="realtime.E007",
            )
        ]
    backend = str(layer.get("BACKEND", ""))
    messages: list[CheckMessage] = []
    if backend == "channels.layers.InMemoryChannelLayer" and not settings.DEBUG:
        messages.append(
            Warning(
                "The in-memory channel layer with DEBUG=False: events reach only the "
                "sockets of this one process.",
                hint="Use django_realtime.layers.ResilientRedisPubSubChannelLayer with Redis "
                "for more than one process (docs/integration.md, production).",
                id="realtime.W002",
            )
        )
    if backend in STOCK_LAYERS:
        messages.append(
            Warning(
                f"{backend} as shipped does not survive Redis restarting: consumers die "
                "(1011) and memberships are lost.",
                hint=f'Use "{STOCK_LAYERS[backend]}" with the same CONFIG.',
                id="realtime.W003",
            )
        )
    if backend.endswith("RedisChannelLayer") and "PubSub" not in backend:
        for host in layer.get("CONFIG", {}).get("hosts") or ["redis://localhost:6379"]:
            timeout = host.get("socket_timeout") if isinstance(host, dict) else None
            if timeout is None or timeout <= BLOCKING_POP_SECONDS:
                messages.append(
                    Error(
                        "The Redis layer's read timeout is "
                        f"{'redis-py’s default' if timeout is None else f'{timeout} s'}, at or "
                        f"below its {BLOCKING_POP_SECONDS} s blocking pop: every idle "
                        "consumer's receive times out and its socket closes with 1011.",
                        hint='Give each host a dict with "address" and "socket_timeout": 10.',
                        id="realtime.E008",
                    )
                )
                break
    return messages


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def check_redis_shards(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Several Redis (shards): each URL once, and presence, limits and topic
    histories on the same list as the channel layer, so a room's presence and
    its deliveries share one shard (django_realtime.shards)."""
    if not isinstance(getattr(settings, "REALTIME", {}), dict):
        return []  # realtime.E005 says so
    messages: list[CheckMessage] = []
    urls = redis_urls()
    bad = [url for url in urls if not url.startswith(REDIS_SCHEMES)]
    twice = sorted({url for url in urls if urls.count(url) > 1})
    problems = [f"{url!r} is not a Redis URL" for url in bad]
    problems += [f"{url} is named more than once" for url in twice]
    if problems:
        messages.append(
            Error(
                "The Redis shards (REALTIME['REDIS_URL'], else the channel layer's hosts): "
                + "; ".join(problems)
                + ".",
                hint="One redis://, rediss:// or unix:// URL per shard, each once.",
                id="realtime.E010",
            )
        )
    layer_urls = layer_redis_urls()
    configured = user_settings().get("REDIS_URL")
    if (
        configured is not None
        and urls
        and layer_urls
        and (len(urls) > 1 or len(layer_urls) > 1)
        and urls != layer_urls
    ):
        messages.append(
            Warning(
                f"REALTIME['REDIS_URL'] names {len(urls)} Redis shard(s) and the channel "
                f"layer {len(layer_urls)} different ones: a room's presence and its "
                "deliveries then live on different shards, so one dead shard costs the "
                "presence of some rooms and the deliveries of others.",
                hint="Give REALTIME['REDIS_URL'] the layer's host URLs in the same order, "
                "or leave it unset (it then follows the layer).",
                id="realtime.W006",
            )
        )
    backend = str(namespace.default_layer().get("BACKEND", ""))
    if backend.endswith("RedisChannelLayer") and "PubSub" not in backend and len(layer_urls) > 1:
        messages.append(
            Warning(
                f"{backend} on {len(layer_urls)} hosts: each process's fan-out channel "
                "lives on one host, so a dead host silences every room for the processes "
                "whose channel hashes to it, not only its own rooms.",
                hint="Use django_realtime.layers.ResilientRedisPubSubChannelLayer to shard "
                "over several Redis (docs/integration.md).",
                id="realtime.W007",
            )
        )
    return messages


# How long a site's marker says it uses its Redis database: refreshed by
# every `manage.py check` (migrate runs one), so a site gone stops counting.
SITE_MARKER_SECONDS = 30 * 86400


def check_redis_sharing(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Sites on one Redis server: channels_redis' own pub/sub layer shares its
    channels across database numbers, and two sites on one database number
    need distinct prefixes (django_realtime.namespace)."""
    layer = namespace.default_layer()
    config = layer.get("CONFIG") or {}
    messages: list[CheckMessage] = []
    if (
        layer.get("BACKEND") == "channels_redis.pubsub.RedisPubSubChannelLayer"
        and namespace.layer_prefix() == namespace.DEFAULT_PREFIX
        and namespace.channel_prefix(namespace.DEFAULT_PREFIX, config.get("hosts"))
        != namespace.DEFAULT_PREFIX
    ):
        messages.append(
            Warning(
                "channels_redis' pub/sub layer ignores the Redis database number: every "
                "site on this Redis server, whatever its database, shares its channels.",
                hint="Use django_realtime.layers.ResilientRedisPubSubChannelLayer, whose "
                "channels carry the database number, or give the layer a prefix of its own.",
                id="realtime.W008",
            )
        )
    urls = redis_urls()
    if not isinstance(getattr(settings, "REALTIME", {}), dict) or not urls:
        return messages
    key, ours = namespace.site_marker()
    try:
        client = redisconn.sync_client(urls[0])
        theirs = client.get(key)
        if theirs is None or theirs in (ours, ours.encode()):
            client.set(key, ours, ex=SITE_MARKER_SECONDS)
            return messages
    except redisconn.ERRORS:
        return messages  # /readyz and the servers report an unreachable Redis
    messages.append(
        Warning(
            f"Another site (another default database) uses this Redis database ({urls[0]}) "
            "with the same prefix: the two would read each other's events and presence.",
            hint="Give each site its own Redis database number, or a distinct "
            'CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] (docs/integration.md, '
            '"Sites sharing a Redis server").',
            id="realtime.W009",
        )
    )
    return messages


def check_database(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    database = settings.DATABASES.get("default", {})
    if database.get("ENGINE") != "django.db.backends.sqlite3" or settings.DEBUG:
        return []
    if database.get("OPTIONS", {}).get("transaction_mode") == "IMMEDIATE":
        return []
    return [
        Warning(
            "SQLite with DEBUG=False and without transaction_mode IMMEDIATE: two "
            "concurrent posts can fail with 'database is locked'.",
            hint='DATABASES["default"]["OPTIONS"] = {"transaction_mode": "IMMEDIATE", '
            '"timeout": 20}; PostgreSQL in production.',
            id="realtime.W004",
        )
    ]


def check_middleware(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    needed = "django.contrib.auth.middleware.AuthenticationMiddleware"
    if needed in settings.MIDDLEWARE:
        return []
    return [
        Warning(
            "AuthenticationMiddleware is not in MIDDLEWARE: pages and SSE streams "
            "cannot see a signed-in session.",
            hint=f'Add "{needed}" (after SessionMiddleware).',
            id="realtime.W005",
        )
    ]


def check_internals(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Other libraries' internals the package relies on (django_realtime.internals)."""
    return [
        Error(
            f"The installed versions no longer have what django-realtime relies on: {problem}.",
            hint="Install the versions of requirements.txt, or adapt the module that "
            "django_realtime/internals.py names for it (docs/architecture.md).",
            id="realtime.E009",
        )
        for problem in internals.problems()
    ]


def register_checks() -> None:
    """Register every check above with Django's check framework."""
    for check in (
        check_installed_apps,
        check_settings,
        check_channel_layer,
        check_redis_shards,
        check_redis_sharing,
        check_database,
        check_middleware,
        check_internals,
    ):
        register(check)
