"""
Provides the chat app's layer events: their types, the payload builders for
the frames clients see, and the broadcasts, sent through django_realtime.bus
(the one door to the channel layer).

The layer is a doorbell: a lost event costs latency, never a message, because
every connection fills a `seq` gap from the database.
"""

import asyncio
import time
import weakref
from datetime import datetime
from typing import Any

from django_realtime import bus, metrics, signals
from django_realtime.payloads import iso, user_payload

from .models import Message

# Layer event types. They live in their own namespace ("chat.*"); client frame
# types are dispatched from an allowlist and can never reach these handlers.
MESSAGE = "chat.message"
RECEIPT = "chat.receipt"
MESSAGE_DELETED = "chat.message_deleted"
KICKED = "chat.kicked"


def message_payload(message: Message, room_slug: str) -> dict[str, Any]:
    """The message frame, also the REST shape of a message."""
    return message_frame(
        room_slug=room_slug,
        id=message.pk,
        seq=message.seq,
        client_id=message.client_id,
        user=user_payload(message.user),
        content=message.content,
        created_at=message.created_at,
    )


def message_frame(
    *,
    room_slug: str,
    id: int,
    seq: int,
    client_id: Any,
    user: dict[str, Any],
    content: str,
    created_at: datetime,
) -> dict[str, Any]:
    """The message frame from its fields (a replay builds it from rows, not models)."""
    return {
        "type": "message",
        "room": room_slug,
        "id": id,
        "seq": seq,
        "client_id": str(client_id),
        "user": user,
        "content": content,
        "created_at": iso(created_at),
    }


def broadcast_message(*, room_id: int, payload: dict[str, Any]) -> None:
    """Ring the room's doorbell for a stored message. On the event loop the
    messages stored in one turn of it (a batch of posts) ring once per room;
    from synchronous code (an on_commit callback) at once."""
    metrics.MESSAGES_STORED.inc()
    signals.message_sent.send(sender=Message, room_id=room_id, message=payload)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        bus.send_sync(bus.room_group(room_id), _message_event(room_id, [payload]))
        return
    ringing = _ringing.get(loop)
    if ringing is None:
        ringing = _ringing[loop] = {}
        loop.call_soon(_ring, loop)
    ringing.setdefault(room_id, []).append(payload)


def message_payloads(event: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages a MESSAGE event rings for, in seq order: `payload`, then
    `more` when one event rang for several."""
    more = event.get("more")
    return [event["payload"], *more] if more else [event["payload"]]


def _message_event(room_id: int, payloads: list[dict[str, Any]]) -> dict[str, Any]:
    event = {"type": MESSAGE, "room_id": room_id, "payload": payloads[0], "sent_at": time.time()}
    if len(payloads) > 1:
        event["more"] = payloads[1:]
    return event


# Per event loop: the rooms whose messages wait for this turn's doorbells.
_ringing: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, list[dict]]] = (
    weakref.WeakKeyDictionary()
)


def _ring(loop: asyncio.AbstractEventLoop) -> None:
    rooms = _ringing.pop(loop, {})
    bus.send_many_sync(
        [
            (bus.room_group(room_id), _message_event(room_id, sorted(payloads, key=_seq)))
            for room_id, payloads in rooms.items()
        ]
    )


def _seq(payload: dict[str, Any]) -> int:
    return payload["seq"]


def broadcast_receipt(*, room_id: int, room_slug: str, user: dict[str, Any], seq: int) -> None:
    payload = {"type": "receipt", "room": room_slug, "user": user, "seq": seq}
    bus.send_sync(
        bus.room_group(room_id), {"type": RECEIPT, "room_id": room_id, "payload": payload}
    )


def broadcast_message_deleted(*, room_id: int, room_slug: str, message_id: int, seq: int) -> None:
    payload = {"type": "message_deleted", "room": room_slug, "id": message_id, "seq": seq}
    bus.send_sync(
        bus.room_group(room_id), {"type": MESSAGE_DELETED, "room_id": room_id, "payload": payload}
    )


def notify_kicked(*, user_id: int, room_id: int, room_slug: str, reason: str) -> None:
    payload = {"type": "kicked", "room": room_slug, "reason": reason}
    bus.send_sync(bus.user_group(user_id), {"type": KICKED, "room_id": room_id, "payload": payload})
