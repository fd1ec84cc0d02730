"""
Provides the chat app's use of the channel layer: group names, layer event
types and the payload builders for the frames clients see.

This is the only chat module that touches the channel layer. The layer is a
doorbell: a lost event costs latency, never a message, because every
connection fills a `seq` gap from the database.
"""

import asyncio
import concurrent.futures
import logging
import time
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import SyncToAsync, async_to_sync
from channels.layers import get_channel_layer

from django_realtime import metrics
from django_realtime.conf import realtime_settings

from .models import Message

logger = logging.getLogger(__name__)

# Layer event types. They live in their own namespace ("chat.*"); client frame
# types are dispatched from an allowlist and can never reach these handlers.
MESSAGE = "chat.message"
TYPING = "chat.typing"
RECEIPT = "chat.receipt"
MESSAGE_DELETED = "chat.message_deleted"
KICKED = "chat.kicked"


def room_group(room_id: int) -> str:
    """The layer group of a room's connections: ASCII, keyed on the id."""
    return f"chat.room.{room_id}"


def user_group(user_id: int) -> str:
    """The layer group of every connection of one user."""
    return f"chat.user.{user_id}"


def iso(dt: datetime) -> str:
    """ISO 8601 in UTC with a Z, the one time format of every frame."""
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def user_payload(user: Any) -> dict[str, Any]:
    return {"id": user.pk, "username": user.get_username()}


def message_payload(message: Message, room_slug: str) -> dict[str, Any]:
    """The message frame, also the REST shape of a message."""
    return {
        "type": "message",
        "room": room_slug,
        "id": message.pk,
        "seq": message.seq,
        "client_id": str(message.client_id),
        "user": user_payload(message.user),
        "content": message.content,
        "created_at": iso(message.created_at),
    }


async def send_to_group(group: str, event: dict[str, Any]) -> None:
    """group_send with a bound on how long the layer may take; failures are logged."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await asyncio.wait_for(
            layer.group_send(group, event), timeout=realtime_settings.LAYER_SEND_TIMEOUT_SECONDS
        )
    except Exception as exc:  # noqa: BLE001 - a broadcast is best-effort by design
        logger.warning("layer group_send to %s failed: %r", group, exc)
        metrics.LAYER_ERRORS.labels("group_send").inc()
        note_failure = getattr(layer, "note_failure", None)
        if note_failure is not None:
            note_failure()


async def group_add(group: str, channel: str) -> bool:
    """group_add bounded in time; a failure is logged, counted and reported to
    the layer (which then probes Redis), and answered False for a retry."""
    layer = get_channel_layer()
    try:
        await asyncio.wait_for(
            layer.group_add(group, channel), timeout=realtime_settings.LAYER_SEND_TIMEOUT_SECONDS
        )
        return True
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - the database still serves resumes
        logger.warning("group_add %s failed: %r", group, exc)
        metrics.LAYER_ERRORS.labels("group_add").inc()
        note_failure = getattr(layer, "note_failure", None)
        if note_failure is not None:
            note_failure()
        return False


_in_flight: set[concurrent.futures.Future | asyncio.Task] = set()


# Sends in flight at once from one send_to_groups call, so a fan-out to
# thousands of groups (an announcement) never exhausts the layer's pool.
SEND_BATCH = 100


async def send_to_groups(sends: list[tuple[str, dict[str, Any]]]) -> None:
    """send_to_group to many groups, SEND_BATCH at a time."""
    for start in range(0, len(sends), SEND_BATCH):
        batch = sends[start : start + SEND_BATCH]
        await asyncio.gather(*(send_to_group(group, event) for group, event in batch))


def send_to_group_sync(group: str, event: dict[str, Any]) -> None:
    """The same, from synchronous code (services, on_commit callbacks).

    Inside a server the send is handed to the event loop and not waited for:
    the caller (a post's ack, a REST response) depends on the database write
    only, never on the layer. Outside one (a management command, a worker) it
    runs to completion before returning.
    """
    send_to_groups_sync([(group, event)])


def send_to_groups_sync(sends: list[tuple[str, dict[str, Any]]]) -> None:
    """send_to_group_sync for many groups in one trip to the event loop (a
    worker sending 1000 notifications pays for one loop, not 1000)."""
    try:
        here = asyncio.get_running_loop()  # called on the event loop itself
    except RuntimeError:
        here = None
    if here is not None:
        task = here.create_task(send_to_groups(sends))
        _in_flight.add(task)
        task.add_done_callback(_in_flight.discard)
        return
    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    if loop is not None and loop.is_running():
        future = asyncio.run_coroutine_threadsafe(send_to_groups(sends), loop)
        _in_flight.add(future)
        future.add_done_callback(_in_flight.discard)
    else:
        async_to_sync(send_to_groups)(sends)


def broadcast_message(*, room_id: int, payload: dict[str, Any]) -> None:
    metrics.MESSAGES_STORED.inc()
    event = {"type": MESSAGE, "room_id": room_id, "payload": payload, "sent_at": time.time()}
    send_to_group_sync(room_group(room_id), event)


def broadcast_receipt(*, room_id: int, room_slug: str, user: dict[str, Any], seq: int) -> None:
    payload = {"type": "receipt", "room": room_slug, "user": user, "seq": seq}
    send_to_group_sync(
        room_group(room_id), {"type": RECEIPT, "room_id": room_id, "payload": payload}
    )


async def broadcast_typing(
    *, room_id: int, room_slug: str, user: dict[str, Any], is_typing: bool
) -> None:
    payload = {"type": "typing", "room": room_slug, "user": user, "is_typing": is_typing}
    await send_to_group(
        room_group(room_id), {"type": TYPING, "room_id": room_id, "payload": payload}
    )


def broadcast_message_deleted(*, room_id: int, room_slug: str, message_id: int, seq: int) -> None:
    payload = {"type": "message_deleted", "room": room_slug, "id": message_id, "seq": seq}
    send_to_group_sync(
        room_group(room_id), {"type": MESSAGE_DELETED, "room_id": room_id, "payload": payload}
    )


def notify_kicked(*, user_id: int, room_id: int, room_slug: str, reason: str) -> None:
    payload = {"type": "kicked", "room": room_slug, "reason": reason}
    send_to_group_sync(
        user_group(user_id), {"type": KICKED, "room_id": room_id, "payload": payload}
    )
