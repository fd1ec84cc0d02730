"""The package's settings (one REALTIME dict, read at call time) and the
system checks that name what a site is missing or has set unsafely."""

import pytest
from django.core import checks
from django.test import override_settings

from chat.auth import origin_allowed
from django_realtime import checks as realtime_checks
from django_realtime.conf import DEFAULTS, layer_redis_urls, realtime_settings, redis_url
from presence import conf as presence_conf


def test_every_setting_has_its_default_when_the_site_sets_none(settings):
    settings.REALTIME = {}  # (assigned, not deleted: a deletion sends no setting_changed)
    for name, default in DEFAULTS.items():
        assert getattr(realtime_settings, name) == default


def test_settings_are_read_at_call_time_and_none_means_the_default(realtime):
    realtime.CHAT_MAX_CONTENT_CHARS = 10
    assert realtime_settings.CHAT_MAX_CONTENT_CHARS == 10
    realtime.CHAT_MAX_CONTENT_CHARS = None
    assert realtime_settings.CHAT_MAX_CONTENT_CHARS == 4000
    realtime.PRESENCE_TTL_SECONDS = 7
    assert presence_conf.ttl_seconds() == 7.0


def test_an_unknown_setting_name_is_an_attribute_error_not_a_silent_none():
    with pytest.raises(AttributeError, match="no realtime setting 'CHAT_MAX_CONTENT'"):
        realtime_settings.CHAT_MAX_CONTENT  # noqa: B018


@pytest.mark.parametrize(
    ("layer", "url"),
    [
        ({"BACKEND": "channels.layers.InMemoryChannelLayer"}, ""),
        ({"BACKEND": "channels_redis.core.RedisChannelLayer"}, "redis://localhost:6379"),
        (
            {
                "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                "CONFIG": {"hosts": ["redis://r1:6380/2"]},
            },
            "redis://r1:6380/2",
        ),
        (
            {
                "BACKEND": "django_realtime.layers.ResilientRedisPubSubChannelLayer",
                "CONFIG": {"hosts": [{"address": "redis://r2:6379", "socket_timeout": 10}]},
            },
            "redis://r2:6379",
        ),
        (
            {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [("r3", 7)]}},
            "redis://r3:7",
        ),
    ],
)
def test_presence_uses_the_channel_layers_redis_unless_told_otherwise(settings, layer, url):
    """A site that configured Redis once, for its layer, gets shared presence."""
    settings.CHANNEL_LAYERS = {"default": layer}
    settings.REALTIME = {}
    assert layer_redis_urls()[:1] == ([url] if url else [])
    assert redis_url() == url
    settings.REALTIME = {"REDIS_URL": "redis://elsewhere:6379/5"}
    assert redis_url() == "redis://elsewhere:6379/5"


@pytest.mark.parametrize(
    ("debug", "allowed_hosts", "origin", "allowed"),
    [
        (True, [], "http://localhost:8000", True),
        (True, [], "http://127.0.0.1:8000", True),
        (True, [], "http://app.localhost", True),
        (True, [], "https://evil.example", False),
        (False, [], "http://localhost:8000", False),
        (False, ["example.com"], "https://example.com", True),
        (False, ["example.com"], "https://example.com.evil.com", False),
    ],
)
def test_an_empty_allowed_hosts_under_debug_accepts_local_origins_as_django_does(
    settings, debug, allowed_hosts, origin, allowed
):
    settings.DEBUG, settings.ALLOWED_HOSTS = debug, allowed_hosts
    # The page's own socket: its Host is the origin's host[:port].
    scheme, host = origin.split("://")
    scope = {
        "path": "/ws/",
        "scheme": scheme.replace("http", "ws"),
        "headers": [(b"host", host.encode())],
    }
    assert origin_allowed(origin, scope) is allowed


def ids(messages) -> list[str]:
    return [m.id for m in messages]


def test_the_demo_is_clean():
    errors = [m for m in checks.run_checks() if m.level >= checks.WARNING and not m.is_silenced()]
    assert errors == []


def test_a_missing_app_is_named_with_its_id_and_a_hint(settings):
    with override_settings(INSTALLED_APPS=[a for a in settings.INSTALLED_APPS if a != "channels"]):
        [error] = realtime_checks.check_installed_apps()
    assert error.id == "realtime.E001" and error.level == checks.ERROR
    assert "'channels' is not in INSTALLED_APPS" in error.msg and '"channels"' in error.hint


def test_a_misspelt_realtime_key_is_a_warning_and_a_non_dict_an_error(settings):
    settings.REALTIME = {"CHAT_MESAGE_RATE": "1/1s"}
    assert ids(realtime_checks.check_settings()) == ["realtime.W001"]
    settings.REALTIME = ["not", "a", "dict"]
    assert ids(realtime_checks.check_settings()) == ["realtime.E005"]


def test_the_in_memory_layer_in_production_is_a_warning(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.DEBUG = False
    assert ids(realtime_checks.check_channel_layer()) == ["realtime.W002"]
    settings.DEBUG = True
    assert ids(realtime_checks.check_channel_layer()) == []
    settings.CHANNEL_LAYERS = {}
    assert ids(realtime_checks.check_channel_layer()) == ["realtime.E007"]


REDIS = "redis://localhost:6379"


@pytest.mark.parametrize(
    ("hosts", "expected"),
    [
        ([REDIS], ["realtime.W003", "realtime.E008"]),
        ([{"address": REDIS, "socket_timeout": 5}], ["realtime.W003", "realtime.E008"]),
        ([{"address": REDIS, "socket_timeout": 10}], ["realtime.W003"]),
    ],
)
def test_a_redis_read_timeout_at_or_below_the_blocking_pop_is_an_error(settings, hosts, expected):
    """channels_redis#422: with redis-py 8's 5 s default, idle consumers die."""
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": hosts}}
    }
    assert ids(realtime_checks.check_channel_layer()) == expected


def test_the_resilient_layers_pass(settings):
    for backend in ("ResilientRedisChannelLayer", "ResilientRedisPubSubChannelLayer"):
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": f"django_realtime.layers.{backend}",
                "CONFIG": {"hosts": [{"address": "redis://x:6379", "socket_timeout": 10}]},
            }
        }
        assert ids(realtime_checks.check_channel_layer()) == []


def test_sqlite_in_production_without_immediate_transactions_is_a_warning(settings, monkeypatch):
    settings.DEBUG = False
    # The dict itself, not the setting: Django warns when DATABASES is overridden.
    sqlite = {"ENGINE": "django.db.backends.sqlite3", "NAME": "x"}
    monkeypatch.setitem(settings.DATABASES, "default", sqlite)
    assert ids(realtime_checks.check_database()) == ["realtime.W004"]
    sqlite["OPTIONS"] = {"transaction_mode": "IMMEDIATE"}
    assert ids(realtime_checks.check_database()) == []


def test_no_authentication_middleware_is_a_warning(settings):
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if "AuthenticationMiddleware" not in m]
    assert ids(realtime_checks.check_middleware()) == ["realtime.W005"]
