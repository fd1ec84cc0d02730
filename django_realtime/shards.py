"""
Provides which shard holds what when REALTIME["REDIS_URL"] lists several
Redis: channels_redis' own ring applied to the name the layer hashes for the
data's group, so a dead shard costs only its rooms, users and topics. Why:
docs/architecture.md, "redisconn".
"""

from __future__ import annotations

import binascii
from collections.abc import Sequence

from . import namespace
from .bus import room_group, topic_group, user_group


def shard_index(name: str, count: int) -> int:
    """The shard of `name` among `count`: channels_redis' ring
    (channels_redis.utils._consistent_hash), so that a group's data lands
    where the layer puts the group."""
    if count <= 1:
        return 0
    return int((binascii.crc32(name.encode("utf8")) & 0xFFF) / (4096 / float(count)))


def layer_group_name(group: str) -> str:
    """The name the default channel layer hashes to place `group` on one of
    its hosts (django_realtime.namespace.group_hash_prefix)."""
    return namespace.group_hash_prefix() + group


def room_shard(room_id: int, count: int) -> int:
    """The shard of a room's presence and typing: that of its layer group."""
    return shard_index(layer_group_name(room_group(room_id)), count)


def user_shard(user_id: int, count: int) -> int:
    """The shard of a user's data that spans rooms: that of their layer group."""
    return shard_index(layer_group_name(user_group(user_id)), count)


def topic_shard(topic: str, count: int) -> int:
    """The shard of a topic's history: that of its doorbell group."""
    return shard_index(layer_group_name(topic_group(topic)), count)


def pick(urls: Sequence[str], index: int) -> str:
    return urls[index if index < len(urls) else 0]
