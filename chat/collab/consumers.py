"""
Provides DocConsumer, the `/ws/docs/{room}/{name}` endpoint: the standard
y-websocket protocol, so stock `yjs` + `y-websocket` clients connect unchanged.

(docs/architecture.md, "Why the modules are as they are")
"""

import asyncio
import logging
from typing import Any

from channels import consumer as channels_consumer
from channels.generic.websocket import AsyncWebsocketConsumer

from django_realtime import bus, credentials, drain
from django_realtime.asyncdb import db
from django_realtime.closecodes import CloseCode
from django_realtime.conf import realtime_settings
from django_realtime.errors import Forbidden, NotFound, Unavailable
from django_realtime.rates import parse_rate
from presence import tracking

from ..session_checks import SessionChecks
from ..slots import CountedConnection
from . import protocol, quotas, services
from .document import LiveDocument
from .hub import hub

logger = logging.getLogger(__name__)


class DocConsumer(CountedConnection, SessionChecks, AsyncWebsocketConsumer):
    """One editor of one document; its credential is checked again as /ws/'s
    is (chat.session_checks), at the document's refresh once due."""

    user: Any
    live: LiveDocument | None = None
    closing = False
    muted = False

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # A consumer that ends without its disconnect (an error, a
            # cancelled task) still leaves the registry and its document.
            drain.unregister(self)
            if self.live is not None:
                live, self.live = self.live, None
                try:
                    await hub().detach(live, self)
                except Exception:  # noqa: BLE001 - cleanup of a connection already gone
                    logger.exception("leaving document %s failed", live.document_id)

    async def dispatch(self, message: dict) -> None:
        """The user's group carries events for /ws/ connections too
        (notifications, …): a document connection ignores those."""
        handler = getattr(self, channels_consumer.get_handler_name(message), None)
        if handler is not None:
            await handler(message)

    # --- connection ------------------------------------------------------------
    async def renew(self) -> None:
        """Keep this connection's slot and re-check its credential once
        SESSION_RECHECK_SECONDS passed (the document's refresh calls it)."""
        self._recheck_when_due()
        await self.renew_slot()

    async def connect(self) -> None:
        """Authenticate, apply the room's access rule, then sync."""
        self.live, self.closing, self.present = None, False, False
        self.aware_times: list[float] = []
        self.waiting: set[asyncio.Task] = set()  # re-checks under way
        self.start_output()
        self.user = self.scope.get("user")
        self.start_session_checks()
        if self.user is None or not self.user.is_authenticated:
            await self._refuse(CloseCode.UNAUTHENTICATED, "authentication required")
            return
        # A document socket counts against WS_MAX_CONNECTIONS_PER_USER with /ws/.
        if not await self.take_slot(self.user.pk):
            cap = realtime_settings.WS_MAX_CONNECTIONS_PER_USER
            await self._refuse(CloseCode.TOO_MANY, f"policy: at most {cap} connections")
            return
        route = self.scope["url_route"]["kwargs"]
        try:
            self.opened = await db(
                services.document_open, user=self.user, slug=route["room"], name=route["name"]
            )
        except (NotFound, Forbidden):
            await self._refuse(CloseCode.NOT_FOUND, "no such document")
            return
        except services.OverQuota:
            cap = realtime_settings.DOCS_MAX_PER_ROOM
            await self._refuse(CloseCode.TOO_MANY, f"policy: at most {cap} documents in a room")
            return
        except Unavailable:
            await self._refuse(CloseCode.TRY_AGAIN, "storage unavailable")
            return
        self.muted = not self.opened.can_edit
        room = self.opened.room
        await self.accept()
        await bus.add(bus.user_group(self.user.pk), self.channel_name)
        # Awareness rides on presence: the editor is present in the room
        # while connected, and a dead process's editors leave it with their
        # leases (presence.redis_store), which the hub hears.
        await tracking.connect(user=self.user, channel=self.channel_name)
        await tracking.enter(
            room_id=room.pk,
            room_slug=room.slug,
            user=self.user,
            channel=self.channel_name,
            status="online",
            announce_self=True,
        )
        self.present = True
        # A drain (SIGTERM) closes it with 1012 like /ws/: y-websocket
        # reconnects, to another process, and syncs again.
        drain.register(self)
        try:
            self.live = await hub().attach(self.opened, self)
        except Unavailable:
            await self._refuse(CloseCode.TRY_AGAIN, "storage unavailable")

    async def disconnect(self, code: int) -> None:
        """Leave the document, its awareness and the room's presence."""
        drain.unregister(self)
        for task in list(getattr(self, "waiting", ())):
            task.cancel()
        self.stop_output()
        if self.live is not None:
            live, self.live = self.live, None
            await hub().detach(live, self)
        if getattr(self, "present", False):
            self.present = False
            await bus.discard(bus.user_group(self.user.pk), self.channel_name)
            await tracking.disconnect(user=self.user, channel=self.channel_name)

    # --- client messages ---------------------------------------------------------
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """One y-websocket message."""
        if self.closing or self.live is None:
            return
        if bytes_data is None:
            await self._refuse(CloseCode.BAD_MESSAGE, "binary y-websocket messages only")
            return
        # The update is most of a message; its header is a few bytes.
        if len(bytes_data) > realtime_settings.DOCS_MAX_UPDATE_BYTES + 16:
            await self._refuse(CloseCode.TOO_LARGE, "update too large")
            return
        try:
            message = protocol.parse(bytes_data)
            if message.kind == protocol.SYNC:
                await self.on_sync(message)
            elif message.kind == protocol.AWARENESS:
                await self.on_awareness(message.payload)
            else:  # QUERY_AWARENESS
                await self.send_bytes(self.live.awareness_all())
        except protocol.ProtocolError as exc:
            await self._refuse(CloseCode.BAD_MESSAGE, f"bad message: {exc}"[:120])
        except services.UpdateInvalid:
            await self._refuse(CloseCode.BAD_MESSAGE, "bad update: not an update of this document")
        except services.Muted:
            self.muted = True  # a muted member reads only: the update is dropped
        except services.UpdateTooLarge:
            await self._refuse(CloseCode.TOO_LARGE, "update too large")
        except services.DocumentFull:
            await self._refuse(CloseCode.DOCUMENT_FULL, "document too large")
        except services.OverQuota as exc:
            await self._refuse(CloseCode.TOO_MANY, f"policy: {exc.message}"[:120])
        except (NotFound, Forbidden):  # banned, removed from a private room
            await self._refuse(CloseCode.NOT_FOUND, "no such document")
        except Unavailable:
            await self._refuse(CloseCode.TRY_AGAIN, "storage unavailable")

    async def on_sync(self, message: protocol.Message) -> None:
        assert self.live is not None
        if message.sync_type == protocol.SYNC_STEP1:
            # The document a client lacks (all of it, on a first sync): up to
            # DOCS_MAX_DOCUMENT_BYTES at once, allowed on top of the output cap.
            await self.send_bytes(self.live.step2_for(message.payload), replay=True)
        elif message.payload != protocol.EMPTY_UPDATE and not self.muted:  # step 2, update
            if len(message.payload) > realtime_settings.DOCS_MAX_UPDATE_BYTES:
                raise services.UpdateTooLarge("update too large")
            await quotas.spend(self.user.pk, len(message.payload))
            await self.live.submit(self, message.payload)

    async def on_awareness(self, payload: bytes) -> None:
        """The client's own awareness, bounded in size (1009) and rate (dropped)."""
        assert self.live is not None
        if len(payload) > realtime_settings.DOCS_AWARENESS_MAX_BYTES:
            await self._refuse(CloseCode.TOO_LARGE, "awareness too large")
            return
        rate = parse_rate(str(realtime_settings.DOCS_AWARENESS_RATE))
        if rate is not None:
            now = asyncio.get_running_loop().time()
            times = self.aware_times = [
                t for t in self.aware_times if t > now - rate.period_seconds
            ]
            if len(times) >= rate.count:
                return  # over the rate: not relayed
            times.append(now)
        await self.live.aware(self, payload)

    # --- layer events (the user's group) -------------------------------------------
    async def session_end(self, event: dict) -> None:
        """The credential this connection was opened with ended: 4401."""
        if credentials.ends(event, self.credential):
            await self._end_session()

    async def session_recheck(self, event: dict) -> None:
        """The user changed: check again (ended: 4401; re-keyed: 1012)."""
        await self._recheck()

    async def chat_kicked(self, event: dict) -> None:
        """Banned from the document's room: 4404, as a stranger."""
        if self.live is not None and event.get("room_id") == self.live.room_id:
            await self._refuse(CloseCode.NOT_FOUND, "no such document")

    # --- output --------------------------------------------------------------------
    async def send_bytes(self, data: bytes, *, replay: bool = False) -> None:
        """Send one message; held while the server's send would wait, so the
        document's other editors never wait for this one (django_realtime.output).
        A `replay` is counted apart from live output, on top of the cap."""
        if self.closing:
            return
        message: dict[str, Any] = {"type": "websocket.send", "bytes": data}
        if replay:
            message["realtime.replay"] = True
        await self.send_bounded(message, len(data), replay=replay)

    async def _refuse(self, code: int, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        if not getattr(self, "accepted", False):
            await self.accept()
        await self.close(code=code, reason=reason)

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        self.accepted = True
        await super().accept(subprotocol, headers)
