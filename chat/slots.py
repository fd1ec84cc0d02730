"""
Provides CountedConnection: a WebSocket consumer's slot among the user's open
connections (WS_MAX_CONNECTIONS_PER_USER, /ws/ and document sockets
together), taken at connect, renewed at each refresh, given back at the end.
"""

from typing import Any

from django_realtime.conf import realtime_settings

from .fanout import open_connections


class CountedConnection:
    """A mixin for a WebSocket consumer counted in WS_MAX_CONNECTIONS_PER_USER
    (/ws/ and document sockets together): its slot, taken in connect, renewed
    at each refresh, given back however the consumer ends."""

    channel_name: str
    counted_user: int | None = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        self.counted_user = None
        try:
            await super().__call__(scope, receive, send)  # type: ignore[misc]
        finally:
            if self.counted_user is not None:
                counted, self.counted_user = self.counted_user, None
                await open_connections.give_back(counted, self.channel_name)

    async def take_slot(self, user_id: int) -> bool:
        """Count this connection; False if the user has the cap open already."""
        cap = realtime_settings.WS_MAX_CONNECTIONS_PER_USER
        if not await open_connections.take(user_id, self.channel_name, cap):
            return False
        self.counted_user = user_id
        return True

    async def renew_slot(self) -> None:
        if self.counted_user is not None:
            await open_connections.renew(self.counted_user, self.channel_name)
