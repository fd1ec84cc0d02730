"""
Provides the project settings, read from the environment.

With no environment at all the site runs on embedded defaults (SQLite and the
in-memory channel layer, one process). Production sets DATABASE_URL, REDIS_URL,
SECRET_KEY, ALLOWED_HOSTS and DEBUG. Every tunable limit below has one default,
documented in docs/integration.md, and can be overridden by an environment
variable of the same name.
"""

import fnmatch
import logging
import os
import re
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
logger = logging.getLogger(__name__)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if not value:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def env_float_or_none(name: str) -> float | None:
    """A number from the environment, or None for "the application's default"."""
    value = os.environ.get(name)
    return float(value) if value else None


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    # Good enough for `make run` on a laptop; production must set SECRET_KEY.
    SECRET_KEY = "insecure-dev-key-set-SECRET_KEY-in-production"
# Rotating SECRET_KEY: the old key(s) here, comma-separated, keep sessions
# (and the sockets opened with them) and signed values valid.
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS", [])
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto (deploy/nginx.conf
# does), so that absolute links such as history's `next` say https.
if env_bool("USE_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Served over HTTPS only (production): secure cookies, redirects to https and
# HSTS (an hour by default: raise HSTS_SECONDS once HTTPS is known to stay).
# With this and a SECRET_KEY of its own, `manage.py check --deploy` is clean.
if env_bool("HTTPS", False):
    SECURE_SSL_REDIRECT = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("HSTS_SECONDS", "3600"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("HSTS_INCLUDE_SUBDOMAINS", True)
    # Joining browsers' preload list is a commitment for the whole domain:
    # HSTS_PRELOAD=1 (with HSTS_SECONDS of a year) says so.
    SECURE_HSTS_PRELOAD = env_bool("HSTS_PRELOAD", False)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "channels",
    "chat",
    "presence",
    "notifications",
    # The demo's own: its user admin, the seed_demo command, its login page.
    "project",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_realtime.logcontext.RequestContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # The package pages' CSP (script-src 'self' …) on the whole demo, admin included.
    "django_realtime.security.SecurityHeadersMiddleware",
]

ROOT_URLCONF = "project.urls"
ASGI_APPLICATION = "project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------
DATABASE_STATEMENT_TIMEOUT_MS = env_int("DATABASE_STATEMENT_TIMEOUT_MS", 10000)
DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}"
# Persistent connections: consumers run their queries on a pool of threads, and
# opening a PostgreSQL connection per frame would cost more than the query.
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL,
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE_SECONDS", 60),
        # No health check: it costs a SELECT 1 before every consumer query. A
        # connection that broke fails one query (UNAVAILABLE) and is replaced.
        conn_health_checks=False,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        # IMMEDIATE takes the write lock at BEGIN, so two writers queue instead
        # of failing with "database is locked" when one upgrades its lock.
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
else:
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].update(
        {
            # A stopped or unreachable PostgreSQL must fail fast (UNAVAILABLE),
            # never hang a consumer.
            "connect_timeout": env_int("DATABASE_CONNECT_TIMEOUT_SECONDS", 3),
            "options": f"-c statement_timeout={DATABASE_STATEMENT_TIMEOUT_MS}",
        }
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channel layer --------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
# Several Redis, separated by commas (REDIS_URL=redis://a:6379/0,redis://b:6379/0),
# are shards: the channel layer spreads its groups over them (channels_redis'
# own sharding), and presence, the shared limits and topic histories follow
# the same list, so each room lives on one shard (docs/integration.md).
REDIS_URLS = [url.strip() for url in REDIS_URL.split(",") if url.strip()]


def _redis_host(address: str) -> dict:
    """How this process talks to one Redis, for the channel layer."""
    return {"address": address, **_REDIS_OPTIONS}


_REDIS_OPTIONS = {
    # redis-py 8 defaults to a 5 s read timeout, the same as channels_redis'
    # 5 s BZPOPMIN, so an idle consumer's read times out and the consumer dies
    # (channels_redis#422). Reads must outlast the blocking pop, yet stay bounded.
    "socket_timeout": env_int("REDIS_SOCKET_TIMEOUT_SECONDS", 10),
    "socket_connect_timeout": env_int("REDIS_CONNECT_TIMEOUT_SECONDS", 3),
    # redis-py's pool raises "Too many connections" past 100, which a burst of
    # joins reaches; one process never needs more than this many at once.
    "max_connections": env_int("REDIS_MAX_CONNECTIONS", 2000),
    "health_check_interval": 30,
}
_REDIS_HOSTS = [_redis_host(url) for url in REDIS_URLS]
# CHANNEL_LAYER_BACKEND: "pubsub-resilient" (the default: one subscription per
# room per process and a local fan-out, so one PUBLISH per message) or
# "core-resilient" (channels_redis' list-based layer). "core" and "pubsub" are
# channels_redis' layers as shipped, kept for the benchmark's comparison with
# the Channels tutorial; never run the project on them.
# The room fan-out's channel (chat/fanout.py) takes every room event of its
# process, and the topic hub's (django_realtime/topics/hub.py) every topic's
# doorbell, so the layers that cap a channel give them far more room.
_FANOUT_CAPACITY = {
    glob: env_int("FANOUT_CHANNEL_CAPACITY", 100_000) for glob in ("*fanout*", "*topics*")
}
CHANNEL_LAYER_BACKEND = os.environ.get("CHANNEL_LAYER_BACKEND", "pubsub-resilient")
_LAYER_CONFIGS = {
    "pubsub-resilient": (
        "django_realtime.layers.ResilientRedisPubSubChannelLayer",
        {"hosts": _REDIS_HOSTS},
    ),
    "core-resilient": (
        "django_realtime.layers.ResilientRedisChannelLayer",
        {
            "hosts": _REDIS_HOSTS,
            # A consumer's inbox; messages over it are dropped by the layer,
            # and the client's seq gap is then filled from the database.
            "capacity": env_int("CHANNEL_CAPACITY", 1000),
            "channel_capacity": _FANOUT_CAPACITY,
            "expiry": 60,
            # Memberships older than this vanish (channels#999); consumers
            # re-add theirs every GROUP_REFRESH_SECONDS, well inside it.
            "group_expiry": env_int("CHANNEL_GROUP_EXPIRY_SECONDS", 86400),
        },
    ),
    "core": ("channels_redis.core.RedisChannelLayer", {"hosts": REDIS_URLS}),
    "pubsub": ("channels_redis.pubsub.RedisPubSubChannelLayer", {"hosts": REDIS_URLS}),
}
if REDIS_URL:
    _backend, _config = _LAYER_CONFIGS[CHANNEL_LAYER_BACKEND]
    CHANNEL_LAYERS = {"default": {"BACKEND": _backend, "CONFIG": _config}}
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {
                "capacity": env_int("CHANNEL_CAPACITY", 1000),
                # This layer never compiles its channel_capacity (channels 4.3):
                # it takes (regex, capacity) pairs as they are.
                "channel_capacity": [
                    (re.compile(fnmatch.translate(glob)), cap)
                    for glob, cap in _FANOUT_CAPACITY.items()
                ],
            },
        }
    }

if not REDIS_URL:
    # The embedded default is one process on purpose (`make run`): the check
    # that warns about the in-memory layer in production says nothing new here.
    SILENCED_SYSTEM_CHECKS = ["realtime.W002"]
if env_bool("HTTPS", False) and not SECURE_HSTS_PRELOAD:
    SILENCED_SYSTEM_CHECKS = [*globals().get("SILENCED_SYSTEM_CHECKS", []), "security.W021"]

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Auth, i18n, static ---------------------------------------------------------
AUTH_PASSWORD_VALIDATORS: list[dict] = []
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# The stock Turbo and htmx the live board (project.live) loads, from npm
# (`make install`); never committed. Absent until installed.
STATICFILES_DIRS = [
    (f"vendor/{name}", BASE_DIR / "node_modules" / package / "dist")
    for name, package in [
        ("turbo", "@hotwired/turbo"),
        ("htmx.org", "htmx.org"),
        ("htmx-ext-sse", "htmx-ext-sse"),
    ]
    if (BASE_DIR / "node_modules" / package / "dist").is_dir()
]
# daphne serves /static/ itself unless a proxy does (SERVE_STATIC=0).
SERVE_STATIC = env_bool("SERVE_STATIC", True)

# --- REST framework -------------------------------------------------------------
# None: the package's views declare their own authentication, permissions,
# parsers, throttles and error handling (django_realtime/rest.py), so the demo
# runs on DRF's defaults as a new site would.

# --- The package's settings (django_realtime/conf.py has each default) --------
# Every key of REALTIME can be set from an environment variable of the same
# name; unset ones keep the package's default.
_REALTIME_TEXT = [
    "CHAT_MESSAGE_RATE",
    "CHAT_TYPING_RATE",
    "CHAT_JOIN_RATE",
    "TOPICS_SUBSCRIBE_RATE",
    "CHAT_ROOM_CREATE_RATE",
    "DOCS_USER_BYTES_RATE",
    "DOCS_AWARENESS_RATE",
    "WS_FLOOD_CLOSE_RATE",
    "API_LOGIN_RATE",
    "API_USER_RATE",
    "LOGIN_FORM_RATE",
    "LOGIN_FORM_USERNAME_RATE",
    "PRESENCE_REDIS_PREFIX",
    "LIMITS_REDIS_PREFIX",
    "TOPICS_REDIS_PREFIX",
    "WS_PATH",
    "BASE_TEMPLATE",
    "METRICS_TOKEN",
    "SITE_URL",
]
_REALTIME_NUMBERS = [
    "CHAT_MAX_CONTENT_CHARS",
    "CHAT_RESUME_MAX_MESSAGES",
    "WS_MAX_CONNECTIONS_PER_USER",
    "WS_MAX_FRAME_BYTES",
    "WS_MAX_PENDING_OUTPUT_BYTES",
    "WS_REPLAY_STALL_SECONDS",
    "WS_TICKET_TTL_SECONDS",
    "TRUSTED_PROXY_COUNT",
    "LAYER_SEND_TIMEOUT_SECONDS",
    "GROUP_REFRESH_SECONDS",
    "SESSION_RECHECK_SECONDS",
    "DATABASE_ASYNC_CONNECTIONS",
    "GC_FULL_COLLECTION_SECONDS",
    "SSE_KEEPALIVE_SECONDS",
    "SSE_MAX_STREAMS_PER_USER",
    "SSE_MAX_STREAM_SECONDS",
    "TOPICS_MAX_SUBSCRIPTIONS",
    "TOPICS_MAX_QUEUE",
    "TOPICS_PROCESS_BACKLOG",
    "TOPICS_PROCESS_LAG_SECONDS",
    "TOPICS_ROUND_SECONDS",
    "TOPICS_HAND_OUT_SHARE",
    "TOPICS_BEHIND_BYTES",
    "TOPICS_MAX_DATA_BYTES",
    "DOCS_MAX_DOCUMENT_BYTES",
    "DOCS_MAX_PER_ROOM",
    "DOCS_AWARENESS_MAX_BYTES",
    "PRESENCE_TTL_SECONDS",
    "PRESENCE_HEARTBEAT_SECONDS",
    "PRESENCE_SWEEP_SECONDS",
    "PRESENCE_REDIS_TIMEOUT_SECONDS",
    "PRESENCE_REDIS_MAX_CONNECTIONS",
    "PRESENCE_DIFF_COALESCE_SECONDS",
    "EMAIL_DIGEST_AFTER_SECONDS",
]
REALTIME: dict = {
    "REDIS_URL": REDIS_URLS or "",
    "DATABASE_STATEMENT_TIMEOUT_MS": DATABASE_STATEMENT_TIMEOUT_MS,
    "WS_ALLOWED_ORIGINS": env_list("WS_ALLOWED_ORIGINS", []),
    # Live data (docs/topics.md): `public:rooms` carries the rooms' changes.
    "TOPICS": {"public": {}},
}
# Offline reach (contract §11): Web Push on with a VAPID key (PEM; "\n" may
# stand for newlines in the environment), the push services it may post to
# (comma-separated prefixes; default the browsers'), and e-mail digests
# through Django's SMTP backend at EMAIL_HOST:EMAIL_PORT.
if os.environ.get("WEBPUSH_VAPID_PRIVATE_KEY"):
    REALTIME["WEBPUSH_VAPID_PRIVATE_KEY"] = os.environ["WEBPUSH_VAPID_PRIVATE_KEY"].replace(
        "\\n", "\n"
    )
if os.environ.get("WEBPUSH_ENDPOINTS"):
    REALTIME["WEBPUSH_ENDPOINTS"] = env_list("WEBPUSH_ENDPOINTS", [])
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "webmaster@localhost")
for _name in _REALTIME_TEXT:
    if os.environ.get(_name):
        REALTIME[_name] = os.environ[_name]
for _name in _REALTIME_NUMBERS:
    _number = env_float_or_none(_name)
    if _number is not None:
        REALTIME[_name] = int(_number) if _number.is_integer() else _number

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "django_realtime.logcontext.ContextFilter"}},
    "formatters": {
        "plain": {
            "format": "%(asctime)s %(levelname)s %(name)s user=%(user)s room=%(room)s %(message)s"
        },
        "json": {"()": "django_realtime.logcontext.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if os.environ.get("LOG_FORMAT") == "json" else "plain",
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    # httpx logs every request (each Web Push) at INFO.
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
    },
}
