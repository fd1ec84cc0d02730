"""
Provides topic history: `Publication`, its two stores (Redis, else the
process's memory) and `replay()`, what a resuming subscriber is sent. A
history is an epoch, the last offset and the last publications, appended in
one atomic step; it is the record, the layer only rings the doorbell. Shards
and epochs: docs/architecture.md, "topics.history".
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .. import namespace, redisconn, shards
from ..conf import realtime_settings, redis_urls
from ..errors import Unavailable
from .names import Namespace

# A topic's epoch and offset outlive its publications by this long, so a
# client that comes back after a quiet hour still resumes in the same epoch.
META_TTL_SECONDS = 86400


@dataclass(frozen=True)
class Publication:
    topic: str
    epoch: str
    offset: int
    data: Any
    key: str | None = None
    # The visibility check of a model broadcast (topics.broadcast), by name.
    audience: str | None = None
    published_at: float = 0.0  # time.time()

    def frame(self) -> dict[str, Any]:
        frame: dict[str, Any] = {"type": "publication", "topic": self.topic, "offset": self.offset}
        if self.key is not None:
            frame["key"] = self.key
        frame["data"] = self.data
        return frame

    def event(self) -> dict[str, Any]:
        """The layer doorbell (plain types: msgpack carries it)."""
        return {
            "type": "topic.publication",
            "topic": self.topic,
            "epoch": self.epoch,
            "offset": self.offset,
            "key": self.key,
            "data": self.data,
            "audience": self.audience,
            "published_at": self.published_at,
        }

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> Publication:
        return cls(
            topic=event["topic"],
            epoch=event["epoch"],
            offset=int(event["offset"]),
            data=event.get("data"),
            key=event.get("key"),
            audience=event.get("audience"),
            published_at=float(event.get("published_at") or 0.0),
        )


@dataclass(frozen=True)
class Published:
    publication: Publication
    replayed: bool  # an idempotency key seen before: nothing was published


@dataclass(frozen=True)
class State:
    """What a topic's history holds now."""

    epoch: str
    offset: int
    publications: list[Publication] = field(default_factory=list)  # ascending, unexpired


@dataclass(frozen=True)
class Replay:
    epoch: str
    offset: int
    recovered: bool
    publications: list[Publication]


def latest(publications: Iterable[Publication]) -> list[Publication]:
    """The latest publication of each key and the latest without one, by offset."""
    last: dict[str | None, Publication] = {}
    for publication in publications:
        last[publication.key] = publication
    return sorted(last.values(), key=lambda p: p.offset)


def replay(state: State, *, since: int | None, epoch: str | None) -> Replay:
    """What a subscriber that has seen up to `since` of `epoch` is sent (docs/topics.md)."""
    if since is None:
        return Replay(state.epoch, state.offset, False, [])
    if epoch == state.epoch and since <= state.offset:
        missed = [p for p in state.publications if p.offset > since]
        if len(missed) == state.offset - since:  # every one of them is still held
            return Replay(state.epoch, state.offset, True, missed)
    return Replay(state.epoch, state.offset, False, latest(state.publications))


def new_epoch() -> str:
    return secrets.token_hex(4)


class History(Protocol):
    def publish(
        self,
        topic: str,
        data: Any,
        *,
        namespace: Namespace,
        key: str | None,
        idempotency_key: str | None,
        audience: str | None,
    ) -> Published: ...

    async def apublish(
        self,
        topic: str,
        data: Any,
        *,
        namespace: Namespace,
        key: str | None,
        idempotency_key: str | None,
        audience: str | None,
    ) -> Published: ...

    async def state(self, topic: str, *, namespace: Namespace) -> State: ...

    def position(self, topic: str, *, namespace: Namespace) -> tuple[str, int]: ...


# --- in memory ---------------------------------------------------------------------------
@dataclass
class _Topic:
    epoch: str
    offset: int = 0
    publications: deque[Publication] = field(default_factory=deque)
    idempotency: dict[str, tuple[int, float]] = field(default_factory=dict)  # key -> offset, expiry


class MemoryHistory:
    """One process's history (the embedded default, and tests)."""

    def __init__(self) -> None:
        self.topics: dict[str, _Topic] = {}
        self.lock = threading.Lock()

    def _topic(self, topic: str, namespace: Namespace, now: float) -> _Topic:
        held = self.topics.get(topic)
        if held is None:
            held = self.topics[topic] = _Topic(epoch=new_epoch())
        cutoff = now - namespace.history_ttl
        while held.publications and (
            held.publications[0].published_at < cutoff
            or len(held.publications) > namespace.history_size
        ):
            held.publications.popleft()
        if len(held.idempotency) > 10_000:  # expired keys go in bulk, now and then
            held.idempotency = {k: v for k, v in held.idempotency.items() if v[1] >= now}
        return held

    def publish(
        self,
        topic: str,
        data: Any,
        *,
        namespace: Namespace,
        key: str | None,
        idempotency_key: str | None,
        audience: str | None,
    ) -> Published:
        now = time.time()
        with self.lock:
            held = self._topic(topic, namespace, now)
            if idempotency_key is not None:
                seen = held.idempotency.get(idempotency_key)
                if seen is not None and seen[1] >= now:
                    first = Publication(topic, held.epoch, seen[0], None, published_at=now)
                    return Published(first, replayed=True)
            held.offset += 1
            publication = Publication(topic, held.epoch, held.offset, data, key, audience, now)
            if namespace.history_size:
                held.publications.append(publication)
                if len(held.publications) > namespace.history_size:
                    held.publications.popleft()
            if idempotency_key is not None:
                held.idempotency[idempotency_key] = (held.offset, now + namespace.history_ttl)
            return Published(publication, replayed=False)

    async def apublish(self, topic: str, data: Any, **kwargs: Any) -> Published:
        return self.publish(topic, data, **kwargs)

    async def state(self, topic: str, *, namespace: Namespace) -> State:
        with self.lock:
            held = self._topic(topic, namespace, time.time())
            return State(held.epoch, held.offset, list(held.publications))

    def position(self, topic: str, *, namespace: Namespace) -> tuple[str, int]:
        """(epoch, offset) where the topic stands: what a page rendered now has seen."""
        with self.lock:
            held = self._topic(topic, namespace, time.time())
            return held.epoch, held.offset


# --- in Redis ----------------------------------------------------------------------------
# KEYS: meta, stream, idempotency key (unused without one)
# ARGV: data, key, audience, history size, history ttl ms, meta ttl s,
#       a new epoch, "1" with an idempotency key
PUBLISH = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local epoch = redis.call('HGET', KEYS[1], 'e')
if ARGV[8] == '1' then
  local seen = redis.call('GET', KEYS[3])
  if seen and epoch then return {tonumber(seen), epoch, 1, now_ms} end
end
if not epoch then
  epoch = ARGV[7]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', 0)
end
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
local size = tonumber(ARGV[4])
if size > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', size, '0-' .. offset,
             'd', ARGV[1], 'k', ARGV[2], 'a', ARGV[3], 't', now_ms)
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
redis.call('EXPIRE', KEYS[1], ARGV[6])
if ARGV[8] == '1' then redis.call('SET', KEYS[3], offset, 'PX', ARGV[5]) end
return {offset, epoch, 0, now_ms}
"""

# KEYS: meta, stream. ARGV: a new epoch, meta ttl s.
# -> {epoch, offset, now ms, entries}
STATE = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', 0)
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
local offset = redis.call('HGET', KEYS[1], 'o')
return {epoch, tonumber(offset), now_ms, redis.call('XRANGE', KEYS[2], '-', '+')}
"""


# KEYS: meta, stream. ARGV: a new epoch, meta ttl s. -> {epoch, offset}
POSITION = """
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', 0)
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return {epoch, tonumber(redis.call('HGET', KEYS[1], 'o'))}
"""


def _keys(topic: str, idempotency_key: str | None) -> list[str]:
    # The hash tag keeps a topic's keys on one Redis Cluster slot.
    base = f"{namespace.key_prefix()}{realtime_settings.TOPICS_REDIS_PREFIX}{{{topic}}}"
    return [f"{base}:m", f"{base}:s", f"{base}:i:{idempotency_key or ''}"]


def _args(
    data: Any, key: str | None, audience: str | None, idempotency_key: str | None, ns: Namespace
) -> list[Any]:
    return [
        json.dumps(data, ensure_ascii=False, separators=(",", ":")),
        "" if key is None else "k" + key,  # "" is no key; "k" + "" is the empty key
        audience or "",
        ns.history_size,
        int(ns.history_ttl * 1000),
        int(max(META_TTL_SECONDS, ns.history_ttl)),
        new_epoch(),
        "1" if idempotency_key is not None else "0",
    ]


def _published(
    topic: str, data: Any, key: str | None, audience: str | None, reply: list[Any]
) -> Published:
    offset, epoch, replayed, now_ms = reply
    epoch = epoch.decode() if isinstance(epoch, bytes) else epoch
    at = int(now_ms) / 1000
    if replayed:
        return Published(Publication(topic, epoch, int(offset), None, published_at=at), True)
    return Published(Publication(topic, epoch, int(offset), data, key, audience, at), False)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _state(topic: str, namespace: Namespace, reply: list[Any]) -> State:
    epoch, offset, now_ms, entries = reply
    cutoff = int(now_ms) / 1000 - namespace.history_ttl
    publications = []
    for entry_id, fields in entries:
        values = dict(zip(map(_text, fields[::2]), fields[1::2], strict=True))
        at = int(values["t"]) / 1000
        if at < cutoff:
            continue
        key = _text(values["k"])
        publications.append(
            Publication(
                topic=topic,
                epoch=_text(epoch),
                offset=int(_text(entry_id).partition("-")[2]),
                data=json.loads(values["d"]),
                key=key[1:] if key else None,
                audience=_text(values["a"]) or None,
                published_at=at,
            )
        )
    return State(_text(epoch), int(offset or 0), publications)


def _unavailable(exc: BaseException) -> Unavailable:
    return Unavailable(f"live data is unavailable: its Redis did not answer ({type(exc).__name__})")


_PUBLISH = redisconn.Script(PUBLISH)
_STATE = redisconn.Script(STATE)
_POSITION = redisconn.Script(POSITION)


class RedisHistory:
    """The history every process shares, in Redis (a stream per topic, on
    the topic's shard)."""

    def __init__(self, url: str | list[str]):
        self.urls = [url] if isinstance(url, str) else list(url)
        self.url = self.urls[0]

    def url_of(self, topic: str) -> str:
        """The shard that holds `topic`."""
        return shards.pick(self.urls, shards.topic_shard(topic, len(self.urls)))

    def publish(
        self,
        topic: str,
        data: Any,
        *,
        namespace: Namespace,
        key: str | None,
        idempotency_key: str | None,
        audience: str | None,
    ) -> Published:
        try:
            reply = _PUBLISH.run(
                self.url_of(topic),
                _keys(topic, idempotency_key),
                _args(data, key, audience, idempotency_key, namespace),
            )
        except redisconn.ERRORS as exc:
            raise _unavailable(exc) from exc
        return _published(topic, data, key, audience, reply)

    async def apublish(
        self,
        topic: str,
        data: Any,
        *,
        namespace: Namespace,
        key: str | None,
        idempotency_key: str | None,
        audience: str | None,
    ) -> Published:
        try:
            reply = await _PUBLISH.arun(
                self.url_of(topic),
                _keys(topic, idempotency_key),
                _args(data, key, audience, idempotency_key, namespace),
            )
        except redisconn.ERRORS as exc:
            raise _unavailable(exc) from exc
        return _published(topic, data, key, audience, reply)

    async def state(self, topic: str, *, namespace: Namespace) -> State:
        try:
            reply = await _STATE.arun(*self._read(topic, namespace))
        except redisconn.ERRORS as exc:
            raise _unavailable(exc) from exc
        return _state(topic, namespace, reply)

    def position(self, topic: str, *, namespace: Namespace) -> tuple[str, int]:
        """(epoch, offset) where the topic stands, without its publications
        (a page's render: {% realtime_stream %}); the epoch is made if new."""
        try:
            epoch, offset = _POSITION.run(*self._read(topic, namespace))
        except redisconn.ERRORS as exc:
            raise _unavailable(exc) from exc
        return _text(epoch), int(offset or 0)

    def _read(self, topic: str, namespace: Namespace) -> tuple[str, list[str], list[Any]]:
        """A read's script call (STATE, POSITION): the topic's shard, its
        meta and stream keys, and the epoch to make if it has none."""
        ttl = int(max(META_TTL_SECONDS, namespace.history_ttl))
        return self.url_of(topic), _keys(topic, None)[:2], [new_epoch(), ttl]


_memory = MemoryHistory()
_redis: dict[tuple[str, ...], RedisHistory] = {}
_redis_lock = threading.Lock()


def history() -> History:
    """The history store: Redis when the package has one, else memory."""
    urls = tuple(redis_urls())
    if not urls:
        return _memory
    store = _redis.get(urls)
    if store is None:
        with _redis_lock:
            store = _redis.get(urls) or RedisHistory(list(urls))
            _redis[urls] = store
    return store
