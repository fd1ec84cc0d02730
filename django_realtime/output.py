"""
Provides HeldOutput: bounded output for a WebSocket consumer, under any server.

Under daphne, whose send never waits, the bound is in the transport
(django_realtime.daphne_transport). A server whose send waits while the
socket is full (uvicorn) would hold up whoever sends: a room's fan-out, a
document's editors, every other member behind this one. Frames for such a
connection are held here, in order, and past WS_MAX_PENDING_OUTPUT_BYTES
(replays allowed on top, as under daphne) it is closed with 4413.
"""

import asyncio
import logging
from collections import deque
from typing import Any

from . import metrics, servers
from .background import spawn
from .closecodes import CloseCode
from .conf import realtime_settings

logger = logging.getLogger(__name__)


class HeldOutput:
    """A mixin for a Channels WebSocket consumer, which sets `closing`."""

    base_send: Any
    scope: dict
    closing: bool

    def start_output(self) -> None:
        """Find the server's output (call once, in connect)."""
        self.output = servers.output_of(self.base_send, self.scope)
        # Frames (websocket.send) go to the send the package's outermost
        # application was given: past the package's own wrappers, which do
        # nothing with them, through any middleware of the site's
        # (servers.frame_send).
        self.send_frame_message = servers.frame_send(self.base_send, self.scope)
        self.held: deque[tuple[dict, int]] = deque()
        self.held_bytes = self.held_allowance = 0
        self.held_writer: asyncio.Task | None = None

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        """Channels' close, a CloseCode sent as the plain int autobahn requires."""
        if isinstance(code, CloseCode):
            code = int(code)
        await super().close(code=code, reason=reason)  # type: ignore[misc]

    def stop_output(self) -> None:
        """Drop what is held (call in disconnect)."""
        if getattr(self, "held_writer", None) is not None:
            self.held_writer.cancel()  # type: ignore[union-attr]
        if hasattr(self, "held"):
            self.held.clear()

    def pending_output(self) -> int:
        """Bytes of output not yet taken by the socket: the server's and held here."""
        return (self.output.pending() if self.output is not None else 0) + self.held_bytes

    def send_now(self, text: str) -> bool:
        """Send a live text frame at once where the server offers a way
        (daphne, when no middleware of the site wraps the package's send:
        django_realtime.daphne_transport), skipping the ASGI send's message
        and coroutine: a hand-out's hottest path. False, nothing sent, where
        it does not (then send_bounded)."""
        output = self.output
        return (
            output is not None
            and output.send_text is not None
            and not self.held
            and output.send_text(text)
        )

    async def send_bounded(self, message: dict, size: int, *, replay: bool = False) -> None:
        """Send an ASGI message of `size` bytes, or hold it while the server's
        send would wait; a `replay` is allowed on top of the cap."""
        if not self.held and (self.output is None or not self.output.blocked()):
            await self.send_frame_message(message)
            return
        if self.closing:
            return
        self.held.append((message, size))
        self.held_bytes += size
        cap = realtime_settings.WS_MAX_PENDING_OUTPUT_BYTES
        if replay:
            self.held_allowance += size
        elif cap and self.pending_output() > cap + self.held_allowance:
            self.held.clear()
            self.held_bytes = 0
            metrics.OUTPUT_OVERFLOWS.inc()
            logger.info("closing a connection of %s: output over limit", self.scope.get("user"))
            self.closing = True  # what comes after is dropped
            # The close frame waits behind the server's output, in a task of its own.
            code = CloseCode.OUTPUT_OVER_LIMIT
            close = {"type": "websocket.close", "code": int(code), "reason": code.reason}
            spawn(self.base_send(close))
            return
        if self.held_writer is None:
            self.held_writer = asyncio.create_task(self._write_held())

    async def _write_held(self) -> None:
        try:
            while self.held:
                message, size = self.held.popleft()
                self.held_bytes -= size
                await self.send_frame_message(message)
            self.held_allowance = 0
        finally:
            self.held_writer = None
