"""
Provides Present, a room's presence list as a `joined` frame carries it:
sorted by username, and ready as JSON text. Each member is parsed and
encoded once per process and kept, so listing a busy room at each join
costs a lookup per member rather than a parse, two dicts and an encoding.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from django_realtime.payloads import user_payload_of

# Members kept, across rooms; past it the cache starts afresh (a rare
# rebuild beats bookkeeping on every join).
KEPT = 20_000

# (username, user id, status, the member as JSON): sorted as tuples, by
# username then id (unique in a room, so the rest is never compared).
Entry = tuple[str, int, str, str]

_kept: dict[tuple[str, str], Entry] = {}


def entry(user_id: int, status: str, username: str) -> Entry:
    member = {"user": user_payload_of(user_id, username), "status": status}
    return (username, user_id, status, json.dumps(member, ensure_ascii=False))


def _listed(uid: str, value: str) -> Entry:
    """The member of a Redis room list's field and value (uid, "status:username")."""
    found = _kept.get((uid, value))
    if found is None:
        if len(_kept) >= KEPT:
            _kept.clear()
        status, _, username = value.partition(":")
        found = _kept[(uid, value)] = entry(int(uid), status, username)
    return found


class Present:
    """Who is in a room, and whether online or away."""

    __slots__ = ("entries",)

    def __init__(self, entries: list[Entry]) -> None:
        entries.sort()
        self.entries = entries

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]]) -> Present:
        """From a Redis room list's fields and values: (uid, "status:username")."""
        return cls([_listed(uid, value) for uid, value in pairs])

    @classmethod
    def from_list(cls, flat: list[str]) -> Present:
        """From a Redis room list as HGETALL returns it in Lua: uid, "status:username", …"""
        return cls.from_pairs(zip(flat[::2], flat[1::2], strict=True))

    def members(self) -> list[dict[str, Any]]:
        """`[{"user": {"id", "username"}, "status"}]`."""
        return [{"user": user_payload_of(e[1], e[0]), "status": e[2]} for e in self.entries]

    def json(self) -> str:
        """members() as JSON text."""
        return "[" + ", ".join(e[3] for e in self.entries) + "]"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Present) and self.entries == other.entries

    def __repr__(self) -> str:
        return f"Present({self.members()!r})"
