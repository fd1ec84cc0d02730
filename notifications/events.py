"""
Provides the notifications app's use of the channel layer: the layer event
type, the `notification` frame and the push to a user's connections.

This is the only notifications module that touches the channel layer; SSE
streams receive through a `Subscription` from here. A
notification goes to the per-user group `chat.events.user_group(user_id)`,
which every /ws/ connection and every SSE notification stream of that user
has joined. The layer is a doorbell here too: the row is stored first, and
REST and an SSE resume read it from the database.
"""

import asyncio
import logging
from typing import Any

from channels.layers import get_channel_layer

from chat.events import iso, send_to_groups_sync, user_group
from django_realtime.conf import realtime_settings

from .models import Notification

logger = logging.getLogger(__name__)

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
    send_to_groups_sync(
        [
            (
                user_group(user_id),
                {"type": NOTIFICATION, "id": frame["notification"]["id"], "payload": frame},
            )
            for user_id, frame in frames
        ]
    )


class Subscription:
    """A private layer channel in some groups: how a stream outside a consumer
    (an SSE response) receives layer events.

    Every call on the layer is bounded in time and a failure is logged, never
    raised: the stream goes on, and catches up from the database at its next
    refresh.
    """

    def __init__(self, groups: list[str]):
        self.layer = get_channel_layer()
        self.groups = groups
        self.channel = ""
        self.epoch: int | None = None
        self._receiving: asyncio.Future | None = None

    async def open(self) -> bool:
        """Make the channel and join the groups."""
        self.channel = await self.layer.new_channel()
        return await self.refresh()

    async def refresh(self) -> bool:
        """(Re-)join every group: memberships expire, and a Redis restarted
        empty has none. False if the layer failed."""
        epoch = getattr(self.layer, "epoch", 0)
        for group in self.groups:
            try:
                await asyncio.wait_for(
                    self.layer.group_add(group, self.channel),
                    timeout=realtime_settings.LAYER_SEND_TIMEOUT_SECONDS,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database still serves resumes
                logger.warning("group_add %s failed: %r", group, exc)
                note_failure = getattr(self.layer, "note_failure", None)
                if note_failure is not None:
                    note_failure()
                return False
        self.epoch = epoch
        return True

    @property
    def watches_epoch(self) -> bool:
        """The layer says when Redis came back (django_realtime.layers), so
        memberships need re-adding."""
        return hasattr(self.layer, "epoch")

    @property
    def stale(self) -> bool:
        """Memberships may be gone: the last refresh failed or Redis came back since."""
        return self.epoch is None or getattr(self.layer, "epoch", 0) != self.epoch

    async def next(self, timeout: float) -> dict[str, Any] | None:
        """The next event, or None after `timeout` seconds.

        A timeout never cancels the receive: a cancelled channels_redis
        receive drops whatever it had buffered for the channel. The pending
        receive is kept for the next call instead.
        """
        if self._receiving is None:
            self._receiving = asyncio.ensure_future(self.layer.receive(self.channel))
        done, _ = await asyncio.wait({self._receiving}, timeout=max(0.0, timeout))
        if not done:
            return None
        receiving, self._receiving = self._receiving, None
        try:
            return receiving.result()
        except Exception as exc:  # noqa: BLE001 - the layer is down; wait, then retry
            logger.warning("layer receive on %s failed: %r", self.channel, exc)
            await asyncio.sleep(min(1.0, max(0.0, timeout)))
            return None

    async def close(self) -> None:
        """Stop receiving and leave the groups (the client has gone)."""
        if self._receiving is not None:
            self._receiving.cancel()
            self._receiving = None
        if not self.channel:
            return
        for group in self.groups:
            try:
                await asyncio.wait_for(
                    self.layer.group_discard(group, self.channel),
                    timeout=realtime_settings.LAYER_SEND_TIMEOUT_SECONDS,
                )
            except Exception as exc:  # noqa: BLE001 - the stream is over either way
                logger.warning("group_discard %s failed: %r", group, exc)
