"""
Provides the presence store the settings select, wired to what it sets off:
Redis when the site has one (REALTIME["REDIS_URL"], else the channel layer's;
several URLs are shards, presence.redis_store),
else this process. This module is the only one that knows both the stores and
what announces their transitions, so the stores depend on nothing above them.
"""

from typing import Any

from django_realtime.conf import redis_urls

from . import conf, transitions, upkeep
from .local import LocalPresenceStore
from .redis_store import RedisPresenceStore
from .store import PresenceStore

_backends: dict[tuple[tuple[str, ...], str], PresenceStore] = {}


def get_store() -> PresenceStore:
    """The backend the settings select now (one per list of Redis shards and prefix)."""
    urls = tuple(redis_urls())
    key = (urls, conf.redis_prefix() if urls else "")
    backend = _backends.get(key)
    if backend is None:
        made: PresenceStore
        if urls:
            made = RedisPresenceStore(
                url=list(urls), prefix=key[1], upkeep=upkeep.run, reap=transitions.reap_if_orphaned
            )
        else:
            made = LocalPresenceStore(reap=transitions.reap_if_orphaned)
        backend = _backends.setdefault(key, made)
    return backend


class _Selected:
    """`store.enter(...)` and so on, on whichever backend get_store() selects."""

    def __getattr__(self, name: str) -> Any:
        return getattr(get_store(), name)


store: Any = _Selected()
