"""Sites sharing a Redis server (django_realtime.namespace, contract §1): the
names each site uses there, and what `manage.py check` tells."""

from __future__ import annotations

import pytest
from django.conf import settings as django_settings

from django_realtime import checks, namespace
from django_realtime.layers import ResilientRedisPubSubChannelLayer
from django_realtime.limits import _key
from django_realtime.shards import layer_group_name
from django_realtime.topics.history import _keys
from presence import conf as presence_conf

LAYER = "django_realtime.layers.ResilientRedisPubSubChannelLayer"


@pytest.mark.parametrize(
    ("hosts", "expected"),
    [
        (["redis://h:6379"], "asgi"),
        (["redis://h:6379/0"], "asgi"),
        (["redis://h:6379/2"], "asgi.db2"),
        (["redis://h:6379?db=3"], "asgi.db3"),
        ([{"address": "redis://h:6379/4"}], "asgi.db4"),
        ([{"host": "h", "port": 6379, "db": 5}], "asgi.db5"),
        ([("h", 6379)], "asgi"),
        (["redis://a/1", "redis://b/2"], "asgi.db1-2"),
    ],
)
def test_channel_names_carry_the_database_number(hosts, expected):
    """Pub/sub ignores database numbers, so the layer's channels carry them."""
    assert namespace.channel_prefix("asgi", hosts) == expected


def test_the_layer_names_its_groups_and_channels_under_its_database():
    layer = ResilientRedisPubSubChannelLayer(hosts=["redis://127.0.0.1:6379/7"], prefix="shop")
    assert layer._kwargs["prefix"] == "shop.db7"


def test_group_placement_follows_the_layers_names(settings):
    """The shard a room's presence lives on is computed from the name the
    layer hashes: the two must agree."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": LAYER, "CONFIG": {"hosts": ["redis://h/2"]}}}
    assert layer_group_name("chat.room.1") == "asgi.db2__group__chat.room.1"


def test_sites_on_one_database_number_set_one_prefix_for_everything(settings):
    """A layer prefix of the site's own starts every key of the package."""
    assert namespace.key_prefix() == ""
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": LAYER, "CONFIG": {"hosts": ["redis://h/0"], "prefix": "shop"}}
    }
    assert layer_group_name("chat.room.1") == "shop__group__chat.room.1"
    assert _key("rate", 1).startswith("shop:limit:")
    assert presence_conf.redis_prefix().startswith("shop:presence:")
    assert all(key.startswith("shop:topic:") for key in _keys("public:x", None))


def test_check_warns_of_the_stock_pubsub_layer_on_a_database_number(settings):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:1/3"]},
        }
    }
    settings.REALTIME = {**settings.REALTIME, "REDIS_URL": ""}
    ids = [message.id for message in checks.check_redis_sharing()]
    assert ids == ["realtime.W008"]


def test_check_tells_two_sites_on_one_database_and_prefix(settings, redis_server, monkeypatch):
    """The first site to check marks the database; a second site (another
    default database) with the same prefix is warned; the first is not."""
    settings.REALTIME = {**settings.REALTIME, "REDIS_URL": redis_server.url}
    assert checks.check_redis_sharing() == []
    assert checks.check_redis_sharing() == []  # the same site again
    monkeypatch.setitem(django_settings.DATABASES["default"], "NAME", "another_site")
    assert [message.id for message in checks.check_redis_sharing()] == ["realtime.W009"]
    # With a prefix of its own, it no longer meets the first site.
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": LAYER, "CONFIG": {"hosts": [redis_server.url], "prefix": "shop"}}
    }
    assert checks.check_redis_sharing() == []
