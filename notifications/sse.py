"""
Provides `GET /events/notifications/`: the user's notifications as
Server-Sent Events (`event: notification`, `id:` the notification id, data
the WebSocket `notification` frame), on django_realtime.sse.

Authentication is the same as REST (`Authorization: Token …` or the session
cookie): anonymous 401.
"""

from typing import Any

from django.http import HttpRequest, HttpResponseBase
from django.views.decorators.http import require_GET

from django_realtime import bus
from django_realtime.asyncdb import db
from django_realtime.conf import realtime_settings
from django_realtime.credentials import credential_of
from django_realtime.errors import Unavailable
from django_realtime.sse import (
    Stream,
    authenticate,
    error_response,
    event_stream_response,
    last_event_id,
    sse_event,
    stream_head,
    take_stream_slot,
)

from . import events, selectors


class NotificationStream(Stream):
    """The user's notifications, by id.

    Per recipient, ids commit in order (notifications.services locks the
    recipient), so "everything after the last id sent" is exact. A doorbell
    is answered from the database with every id after the last one sent: a
    doorbell overtaken by a later one loses nothing, and a burst of doorbells
    costs one read.
    """

    def __init__(self, *, user_id: int, last: int | None):
        self.user_id = user_id
        self.groups = [bus.user_group(user_id)]
        self.resume_after = last
        self.last = 0  # the last id sent (or, on a fresh stream, the position it starts at)

    async def start(self) -> list[bytes]:
        position, rows, truncated = await db(
            self._backlog, user_id=self.user_id, last=self.resume_after
        )
        fresh = position is not None
        self.last = position if position is not None else (self.resume_after or 0)
        chunks = [stream_head(position if fresh else None)]
        if truncated:
            chunks.append(sse_event(event="truncated", data={"type": "truncated"}))
        return chunks + self._send(rows)

    @staticmethod
    def _backlog(*, user_id: int, last: int | None) -> tuple[int | None, list, bool]:
        """(a fresh position or None, rows after `last`, whether older were left out)."""
        if last is not None and last > selectors.max_notification_id():
            last = None  # an id nobody was ever given: forged, or from another database
        if last is None:
            return selectors.last_notification_id(user_id=user_id), [], False
        rows, truncated = selectors.notifications_after(
            user_id=user_id, after=last, limit=realtime_settings.CHAT_RESUME_MAX_MESSAGES
        )
        return None, rows, truncated

    async def on_event(self, event: dict[str, Any]) -> list[bytes]:
        event_id = event.get("id")
        if event.get("type") != events.NOTIFICATION or not isinstance(event_id, int):
            return []
        if event_id <= self.last:
            return []  # sent already, from the backlog or an earlier doorbell
        return await self.catch_up()

    async def catch_up(self) -> list[bytes]:
        rows, _ = await db(
            selectors.notifications_after,
            user_id=self.user_id,
            after=self.last,
            limit=realtime_settings.CHAT_RESUME_MAX_MESSAGES,
        )
        return self._send(rows)

    def _send(self, rows: list) -> list[bytes]:
        chunks = []
        for notification in rows:
            if notification.pk > self.last:
                chunks.append(
                    sse_event(
                        event="notification",
                        data=events.notification_frame(notification),
                        event_id=notification.pk,
                    )
                )
                self.last = notification.pk
        return chunks


@require_GET
async def notification_events(request: HttpRequest) -> HttpResponseBase:
    """The user's notifications as Server-Sent Events."""
    try:
        user, error = await authenticate(request)
    except Unavailable as exc:
        return error_response(exc.status, exc.message, exc.code)
    if error is not None:
        return error
    slot, refused = await take_stream_slot(user.pk)
    if refused is not None:
        return refused
    return event_stream_response(
        NotificationStream(user_id=user.pk, last=last_event_id(request)),
        credential_of(request),
        slot=slot,
        request=request,
    )
