"""
Provides MsgpackCheckedLayer: the in-memory channel layer, except that every
message it carries must come back from msgpack unchanged, as it would have to
over Redis (channels_redis packs each message with msgpack). The unit tests
run on it (tests/conftest.py), so a payload holding a datetime, a tuple, a
UUID or a set, which the in-memory layer would pass and Redis would not, fails
the test that sent it.
"""

from __future__ import annotations

from typing import Any

import msgpack
from channels.layers import InMemoryChannelLayer

# Every message that did not survive, as (where, type, reason). The layer's
# callers log and swallow send errors (a broadcast is best-effort), so the
# tests check this list rather than expect an exception.
failures: list[tuple[str, str, str]] = []
# The event types that went through, for the test that covers each one.
seen: set[str] = set()


def roundtrip(where: str, message: dict[str, Any]) -> dict[str, Any]:
    kind = str(message.get("type"))
    try:
        back = msgpack.unpackb(msgpack.packb(message))
    except (TypeError, ValueError) as exc:
        failures.append((where, kind, f"not msgpack-able: {exc}"))
        raise
    if back != message:
        failures.append((where, kind, f"changed by msgpack: {message!r} -> {back!r}"))
        raise TypeError(f"{kind} does not survive msgpack unchanged")
    seen.add(kind)
    return back


class MsgpackCheckedLayer(InMemoryChannelLayer):
    async def send(self, channel: str, message: dict) -> None:
        await super().send(channel, roundtrip(f"send {channel}", message))

    async def group_send(self, group: str, message: dict) -> None:
        await super().group_send(group, roundtrip(f"group_send {group}", message))
