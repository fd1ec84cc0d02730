"""
Provides ReplayPacing: a room's backlog (a resume, a gap fill) sent from the
database a page at a time as the socket takes it, with the delivery lock
held, and the close (4413) of a connection whose output is over its limit.
The bound on live output itself is django_realtime.output's.
"""

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from django_realtime import metrics, servers
from django_realtime.closecodes import CloseCode
from django_realtime.conf import realtime_settings
from django_realtime.output import HeldOutput

from . import streams
from .delivery import JoinedRoom

# The connection's log lines keep the consumer's logger.
logger = logging.getLogger("chat.consumers")

# A replay waits for the socket only below the output cap (and a frame more).
REPLAY_SLACK = 64 * 1024


class ReplayPacing(HeldOutput):
    """A mixin for RealtimeConsumer: replays paced by the socket."""

    user: Any
    send_frame: Callable[..., Awaitable[None]]  # the consumer's

    async def _replay(self, room: JoinedRoom, last_seq: int, *, counted: bool = False) -> bool:
        """Send the room's messages from its cursor up to `last_seq`, a page
        at a time as the socket takes them, with the delivery lock held.
        False if the connection was closed meanwhile."""
        pages = streams.replay(
            room.cursor, room_id=room.room_id, room_slug=room.slug, last_seq=last_seq
        )
        async for page in pages:
            (metrics.RESUME_REPLAYED if counted else metrics.GAP_FILLS).inc(len(page))
            for message in page:
                if not await self._output_taken():
                    return False
                await self.send_frame(message, replay=True)
        return not self.closing

    async def _output_taken(self) -> bool:
        """Wait until the socket has taken most of what it was sent
        (django_realtime.servers.output_taken); if it took nothing for too
        long, close with 4413. False once the connection is closing."""
        cap = realtime_settings.WS_MAX_PENDING_OUTPUT_BYTES
        if cap and self.pending_output() > cap + REPLAY_SLACK:
            # Over the cap already: live output stopped going out (under
            # daphne, the transport has closed it); waiting would only hold
            # the lock while the connection's events pile up.
            await self._overflow()
        elif not await servers.output_taken(self.pending_output, lambda: self.closing):
            if not self.closing:
                metrics.OUTPUT_OVERFLOWS.inc()
                logger.info("closing a connection of user %s: its replay stalled", self.user.pk)
                await self._overflow()
        return not self.closing

    async def _overflow(self) -> None:
        """Output over its limit (a topic queue full): close (4413); the
        client resumes with `since`."""
        if not self.closing:
            self.closing = True
            await self.close(
                code=CloseCode.OUTPUT_OVER_LIMIT, reason=CloseCode.OUTPUT_OVER_LIMIT.reason
            )
