"""
Provides the notifications app's layer event: its type, the `notification`
frame and the push to a user's connections, through django_realtime.bus.

A notification goes to the per-user group `bus.user_group(user_id)`, which
every /ws/ connection and every SSE notification stream of that user has
joined. The layer is a doorbell here too: the row is stored first, and REST
and an SSE resume read it from the database.
"""

from typing import Any

from django_realtime import bus
from django_realtime.payloads import iso

from .models import Notification

# Layer event type, in its own namespace ("notify.*"): the consumer's handler
# is `notify_notification`, which no client frame can reach.
NOTIFICATION = "notify.notification"


def notification_payload(notification: Notification) -> dict[str, Any]:
    """A notification as clients see it, on every transport and in REST."""
    return {
        "id": notification.pk,
        "kind": notification.kind,
        "data": notification.data,
        "created_at": iso(notification.created_at),
        "read": notification.read_at is not None,
    }


def notification_frame(notification: Notification) -> dict[str, Any]:
    """The `notification` frame of the WebSocket, also the data of an SSE event."""
    return {"type": "notification", "notification": notification_payload(notification)}


def push_notifications(*, frames: list[tuple[int, dict[str, Any]]]) -> None:
    """Send each (recipient id, frame) to the recipient's open connections.

    Safe from any synchronous code: inside a server it does not wait on the
    layer, outside one (a command, a worker) it completes before returning.
    """
    bus.send_many_sync(
        [
            (
                bus.user_group(user_id),
                {"type": NOTIFICATION, "id": frame["notification"]["id"], "payload": frame},
            )
            for user_id, frame in frames
        ]
    )
