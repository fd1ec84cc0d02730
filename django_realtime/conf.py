"""
Provides `realtime_settings`: every setting of the package, one key of the
site's `REALTIME` dict each, with its one documented default here.

Each value is read once and kept; `setting_changed` (sent by
`override_settings(REALTIME=…)` and pytest-django's `settings` fixture)
forgets them, so changes take effect at once, as DRF's `api_settings` does.
A key set to None counts as unset. docs/integration.md
lists every key; `manage.py check` reports unknown ones (realtime.W001).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

DEFAULTS: dict[str, Any] = {
    # === Settings a site sets (docs/integration.md, "Settings a site sets") ===
    # The WebSocket path under the site's WebSocket router (no leading slash).
    "WS_PATH": "ws/",
    # Redis for presence, the shared limits and topic histories (and the
    # /readyz probe, on the first). None: the channel layer's own Redis hosts
    # when the layer is a Redis one; "": none, one process. Several shards: a
    # list of URLs (or one string of URLs separated by commas), best the same
    # list, in the same order, as the layer's hosts (django_realtime.shards).
    "REDIS_URL": None,
    # The template the pages extend; a site sets its own to wrap them in its
    # layout (it must define the blocks `title`, `head`, `content`, `scripts`).
    "BASE_TEMPLATE": "realtime/base.html",
    # The site's address for links in e-mails ("https://example.com");
    # None: http:// and the first ALLOWED_HOSTS entry that is a name.
    "SITE_URL": None,
    # Origins (scheme://host[:port]) allowed to open the WebSocket besides
    # those whose host is in ALLOWED_HOSTS.
    "WS_ALLOWED_ORIGINS": [],
    # Proxies in front of the server that set X-Forwarded-For (nginx: 1); the
    # client address of every throttle is then the one they vouch for. 0: the
    # socket's address, whatever a client's own headers say.
    "TRUSTED_PROXY_COUNT": 0,
    # `metrics` (django_realtime.urls) answers `Authorization: Bearer <this>`
    # and staff users; None: staff users only (anyone else gets 404).
    "METRICS_TOKEN": None,
    # Namespaces: {"name": {"subscribe", "publish", "history_size",
    # "history_ttl", "max_rate"}}, each option optional.
    "TOPICS": {},
    # The VAPID private key (PEM, P-256) that signs Web Push requests; None: no push.
    "WEBPUSH_VAPID_PRIVATE_KEY": None,
    # The VAPID `sub` claim, a contact for push services; None: mailto:DEFAULT_FROM_EMAIL.
    "WEBPUSH_VAPID_SUBJECT": None,
    # === Tuning: the defaults suit most sites (docs/integration.md, "Tuning") ===
    # --- Limits ----------------------------------------------------------------
    # Messages per user per room; `off` disables it (load tests).
    "CHAT_MESSAGE_RATE": "20/10s",
    "CHAT_TYPING_RATE": "1/1s",
    # `join` frames per user, all rooms; `off` disables it.
    "CHAT_JOIN_RATE": "30/10s",
    # Rooms a user may create (POST /api/rooms/, the index page's form), all
    # processes together; past it 429 with Retry-After. `off` disables it.
    "CHAT_ROOM_CREATE_RATE": "20/h",
    "CHAT_MAX_CONTENT_CHARS": 4000,
    # A resume replays at most this many messages; older ones come from REST.
    "CHAT_RESUME_MAX_MESSAGES": 1000,
    # Open WebSocket connections per user; one more is accepted and closed at
    # once with 4429 (0: no cap).
    "WS_MAX_CONNECTIONS_PER_USER": 20,
    # A connection refused with RATE_LIMITED more often than this is closed
    # with 4408 (a client that keeps sending regardless); `off` disables it.
    "WS_FLOOD_CLOSE_RATE": "100/10s",
    # A client frame over this closes the connection with 1009.
    "WS_MAX_FRAME_BYTES": 65536,
    # Output a connection's socket has not taken yet, past which the
    # connection is closed with 4413 (its client resumes with `since`).
    "WS_MAX_PENDING_OUTPUT_BYTES": 262144,
    # A replay (a resume's backlog) is sent as the socket takes it; one that
    # takes nothing for this long meanwhile is closed with 4413 too.
    "WS_REPLAY_STALL_SECONDS": 30.0,
    "WS_TICKET_TTL_SECONDS": 30,
    # Every key of the shared limits (rates, connection and stream caps) in
    # Redis starts with this.
    "LIMITS_REDIS_PREFIX": "limit:",
    # REST: token logins per client address, and calls per user.
    "API_LOGIN_RATE": "120/min",
    "API_USER_RATE": "6000/min",
    # Failed logins on a site's login form (django_realtime.logins) per client
    # address, and per username (so many addresses cannot try one account).
    "LOGIN_FORM_RATE": "20/min",
    "LOGIN_FORM_USERNAME_RATE": "60/hour",
    # --- The channel layer -------------------------------------------------------
    # How long a broadcast may wait on the layer before it is given up (the
    # message is stored already; clients fill the gap from the database).
    "LAYER_SEND_TIMEOUT_SECONDS": 5.0,
    # Every process re-adds its layer groups and checks its rooms against the
    # database this often (jittered), and at once when Redis comes back: a
    # Redis restarted empty, an expired group or a dropped doorbell heals within it.
    "GROUP_REFRESH_SECONDS": 30.0,
    # Each WebSocket and SSE stream checks its session or token again this
    # often, besides at once on logout, token deletion and user changes (§2).
    "SESSION_RECHECK_SECONDS": 300.0,
    # --- The database ----------------------------------------------------------
    # A WebSocket post is stored over this many asynchronous connections per
    # process (PostgreSQL only).
    "DATABASE_ASYNC_CONNECTIONS": 4,
    # Those connections prepare their statements, so PostgreSQL plans each
    # once per connection, not once per post. False behind a pooler that
    # cannot carry prepared statements (pgbouncer in transaction mode before
    # 1.21, or without max_prepared_statements).
    "DATABASE_PREPARED_STATEMENTS": True,
    # The longest a statement may run; waits on the database are bounded by it.
    "DATABASE_STATEMENT_TIMEOUT_MS": 10000,
    # --- The process ------------------------------------------------------------
    # In a server process that opts in (django_realtime.collector.install(),
    # as the demo's asgi.py does), what survives a full garbage collection is
    # frozen, so later ones scan only what is new, and everything is scanned
    # at most this often. 0: install() leaves Python's own pacing.
    "GC_FULL_COLLECTION_SECONDS": 600.0,
    # --- Server-Sent Events ----------------------------------------------------
    # A comment line after this much silence, so proxies that cut idle
    # connections (often at 30-60 s) keep the stream open.
    "SSE_KEEPALIVE_SECONDS": 15.0,
    # Open streams per user; more get 429 (0: no cap).
    "SSE_MAX_STREAMS_PER_USER": 20,
    # A stream ends after about this long (jittered) and the client reconnects
    # with Last-Event-ID, so credentials and access are checked again (0: never).
    "SSE_MAX_STREAM_SECONDS": 3600,
    # --- Live data: topics (docs/topics.md) -------------------------------------
    # Topics one WebSocket connection may subscribe to at once.
    "TOPICS_MAX_SUBSCRIPTIONS": 100,
    # `subscribe` frames per user, all topics (as joins, apart from them);
    # `off` disables it.
    "TOPICS_SUBSCRIBE_RATE": "30/10s",
    # Publications waiting for one slow connection (after conflation by key)
    # past which it is closed with 4413 and resumes with `since`.
    "TOPICS_MAX_QUEUE": 1000,
    # A connection whose socket has more than this not taken yet is behind:
    # its publications wait, conflated by key, until the socket drains.
    "TOPICS_BEHIND_BYTES": 65536,
    # Publications of one topic a process lets wait to be handed out before,
    # being behind, it conflates them by key (its subscribers then get the
    # latest value of each key); below it, every one goes to every subscriber.
    "TOPICS_PROCESS_BACKLOG": 100,
    # ... or once the oldest waiting one came longer ago than this: how far
    # behind a subscriber of a conflating process is, a hand-out or so.
    "TOPICS_PROCESS_LAG_SECONDS": 0.02,
    # A process hands out a topic's publications in rounds, at most one
    # round per this many seconds (the first after a quiet spell at once):
    # a publication waits at most this long to go out with the others, and
    # a batching subscriber gets one frame per round. 0: no pacing.
    "TOPICS_ROUND_SECONDS": 0.02,
    # Hand-outs take at most this share of a process's time: when a round
    # takes long to hand out (thousands of subscribers), the next one waits
    # in proportion, so a process that cannot keep up sends fewer, fuller
    # rounds rather than nothing else. 1: rounds back to back.
    "TOPICS_HAND_OUT_SHARE": 0.5,
    # The largest `data` of one publication, JSON-encoded.
    "TOPICS_MAX_DATA_BYTES": 65536,
    # Every topic key in Redis starts with this.
    "TOPICS_REDIS_PREFIX": "topic:",
    # --- Shared documents (contract §9; docs/protocol.md "Shared documents") ----
    # One Yjs update a client sends; a larger one closes the document's
    # WebSocket with 1009 "update too large". Below daphne's 1 MiB frame limit.
    "DOCS_MAX_UPDATE_BYTES": 262144,
    # What one document may store (its snapshot plus the updates logged since);
    # an update that would pass it closes with 4409 "document too large". The
    # whole document goes to a client in one frame, so keep it below 1 MiB.
    "DOCS_MAX_DOCUMENT_BYTES": 786432,
    # A document whose log holds this many updates past its snapshot is
    # compacted (in the background, by the process that stored the last one).
    "DOCS_COMPACT_UPDATES": 200,
    # A document nobody in this process edits leaves its memory after this long.
    "DOCS_IDLE_SECONDS": 30.0,
    # A remote editor's awareness (cursor, name) that was not renewed for this
    # long is removed (clients renew every 15 s; a dead server's editors go).
    "DOCS_AWARENESS_TIMEOUT_SECONDS": 35.0,
    # Bytes of document updates one user may store (all documents, all
    # processes); past it the socket closes with 4429 and nothing is stored.
    # A bucket: a burst of the whole amount passes. `off` disables it.
    "DOCS_USER_BYTES_RATE": "1048576/min",
    # Documents one room may hold; opening a new one past it closes with 4429.
    "DOCS_MAX_PER_ROOM": 100,
    # One awareness message (a client's name, colour, cursor: ~200 bytes); a
    # larger one closes the socket with 1009.
    "DOCS_AWARENESS_MAX_BYTES": 8192,
    # Awareness messages per connection (stock clients send one per cursor
    # move); past it they are dropped, not relayed. `off` disables it.
    "DOCS_AWARENESS_RATE": "20/1s",
    # --- Presence (presence/conf.py says how these hang together) ---------------
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
    # a thousand then costs one diff per window instead of one per join.
    "PRESENCE_DIFF_COALESCE_SECONDS": 0.5,
    # --- Offline reach (contract §11; notifications.push, notifications.digests) ---
    # The only URL prefixes a subscription's endpoint may have: the browsers'
    # push services, https only (a `*.` host matches its subdomains). The
    # server never posts anywhere else. http is accepted for loopback only (tests).
    "WEBPUSH_ENDPOINTS": [
        "https://fcm.googleapis.com/",
        "https://updates.push.services.mozilla.com/",
        "https://web.push.apple.com/",
        "https://*.notify.windows.com/",
    ],
    # Subscriptions (browsers, devices) per user; one more is 400.
    "WEBPUSH_MAX_SUBSCRIPTIONS_PER_USER": 10,
    # How long a push service keeps a push for a device that is off (TTL header).
    "WEBPUSH_TTL_SECONDS": 86400,
    # Push requests in flight per process, and the bound on each.
    "WEBPUSH_CONCURRENCY": 50,
    "WEBPUSH_TIMEOUT_SECONDS": 10.0,
    # A user's oldest unread, not yet e-mailed notification this old, and the
    # user with no connection open: one e-mail carries all of them.
    "EMAIL_DIGEST_AFTER_SECONDS": 600,
    # The server processes send pushes and digests themselves; False for a
    # site that runs `manage.py send_digests` from cron (and for workers).
    "OFFLINE_REACH_IN_PROCESS": True,
}
# The keys of DEFAULTS a site sets; every other key is tuning.
SITE_SETTINGS: tuple[str, ...] = (
    "WS_PATH",
    "REDIS_URL",
    "BASE_TEMPLATE",
    "SITE_URL",
    "WS_ALLOWED_ORIGINS",
    "TRUSTED_PROXY_COUNT",
    "METRICS_TOKEN",
    "TOPICS",
    "WEBPUSH_VAPID_PRIVATE_KEY",
    "WEBPUSH_VAPID_SUBJECT",
)


class RealtimeSettings:
    """`realtime_settings.NAME`: the site's REALTIME["NAME"], else the default.

    A value, once looked up, is kept as an attribute (some are read on every
    frame); assigning settings.REALTIME (override_settings, a test's
    `settings`) sends `setting_changed`, which forgets them."""

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"no realtime setting {name!r}")
        configured = user_settings().get(name)
        value = DEFAULTS[name] if configured is None else configured
        self.__dict__[name] = value
        return value

    def forget(self) -> None:
        self.__dict__.clear()


def user_settings() -> dict[str, Any]:
    """The site's REALTIME dict ({} when unset)."""
    value = getattr(settings, "REALTIME", None)
    return value if isinstance(value, dict) else {}


realtime_settings = RealtimeSettings()
_urls: dict[str, tuple[str, ...]] = {}  # redis_urls(), once read


def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "REALTIME":
        realtime_settings.forget()
    if setting in {"REALTIME", "CHANNEL_LAYERS"}:
        _urls.clear()


setting_changed.connect(_settings_changed)


def redis_url() -> str:
    """The first of redis_urls() ("" for none): the one Redis of a site with one."""
    urls = redis_urls()
    return urls[0] if urls else ""


def redis_urls() -> list[str]:
    """The Redis shards that presence, the shared limits and topic histories
    use, in order ([] for none): REALTIME["REDIS_URL"] (a URL, a list of them,
    or URLs separated by commas), else the default channel layer's hosts.
    Which shard holds what: django_realtime.shards. Read once (every
    shared-limit hit asks), forgotten when either setting changes."""
    urls = _urls.get("redis")
    if urls is None:
        given = realtime_settings.REDIS_URL
        if given is None:
            urls = tuple(layer_redis_urls())
        else:
            listed = given if isinstance(given, list | tuple) else str(given).split(",")
            urls = tuple(str(url).strip() for url in listed if str(url).strip())
        _urls["redis"] = urls
    return list(urls)


def layer_redis_urls() -> list[str]:
    """The default channel layer's Redis hosts as URLs, in its order ([] when
    it is not a Redis layer; "" for a host given in a form not understood)."""
    from .namespace import default_layer  # imports channels_redis: not at conf's import

    layer = default_layer()
    if not str(layer.get("BACKEND", "")).startswith(("channels_redis.", "django_realtime.")):
        return []
    hosts = layer.get("CONFIG", {}).get("hosts") or []
    if not hosts:
        return ["redis://localhost:6379"]  # channels_redis' own default
    return [_host_url(host) for host in hosts]


def _host_url(host: Any) -> str:
    if isinstance(host, str):
        return host
    if isinstance(host, dict) and isinstance(host.get("address"), str):
        return host["address"]
    if isinstance(host, list | tuple) and len(host) == 2:
        return f"redis://{host[0]}:{host[1]}"
    return ""
