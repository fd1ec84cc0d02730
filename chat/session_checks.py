"""
Provides SessionChecks: the credential a connection was opened with (a
session, a token), checked again every SESSION_RECHECK_SECONDS and when the
user changes, closing the connection once it ended (4401) or moved (1012).
"""

import asyncio
import logging
from typing import Any

from django_realtime import credentials
from django_realtime.background import spawn
from django_realtime.closecodes import SESSION_ENDED, SESSION_MOVED, CloseCode
from django_realtime.conf import realtime_settings
from django_realtime.output import HeldOutput

# The connection's log lines keep the consumer's logger.
logger = logging.getLogger("chat.consumers")


class SessionChecks(HeldOutput):
    """A mixin for a WebSocket consumer (RealtimeConsumer, DocConsumer): its
    credential's re-checks."""

    user: Any
    waiting: set[asyncio.Task]

    def start_session_checks(self) -> None:
        """Note the credential and when it was checked (call once, in connect)."""
        self.credential = self.scope.get("realtime_credential")
        self.checked_at = asyncio.get_running_loop().time()

    def _recheck_when_due(self) -> None:
        """Re-check the credential in a task once SESSION_RECHECK_SECONDS passed."""
        now = asyncio.get_running_loop().time()
        if now - self.checked_at >= realtime_settings.SESSION_RECHECK_SECONDS:
            self.checked_at = now
            spawn(self._recheck(), into=self.waiting)

    async def _recheck(self) -> None:
        verdict = await credentials.verdict_async(user_id=self.user.pk, credential=self.credential)
        if verdict is credentials.Verdict.ENDED:
            await self._end_session()
        elif verdict is credentials.Verdict.MOVED and not self.closing:
            self.closing = True
            await self.close(code=CloseCode.SERVICE_RESTART, reason=SESSION_MOVED)

    async def _end_session(self) -> None:
        if not self.closing:
            self.closing = True
            logger.info("closing a connection of user %s: its session ended", self.user.pk)
            await self.close(code=CloseCode.UNAUTHENTICATED, reason=SESSION_ENDED)
