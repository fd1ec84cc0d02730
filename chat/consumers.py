"""
Provides RealtimeConsumer, the one `/ws/` endpoint: every room, the user's
notifications, presence and topics over one connection. It authenticates,
dispatches frames to chat.frames, chat.services and presence.tracking, and
forwards layer events; each other concern is a module of its own (slots,
delivery, replay, flood, session_checks).
How: docs/architecture.md, "chat.consumers".
"""

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from channels import consumer as channels_consumer
from channels.generic.websocket import AsyncWebsocketConsumer

from django_realtime import bus, credentials, drain, metrics
from django_realtime.asyncdb import db
from django_realtime.closecodes import CloseCode
from django_realtime.conf import realtime_settings
from django_realtime.errors import BadRequest, ClientError, RateLimited
from django_realtime.limits import limiter
from django_realtime.logcontext import log_room, log_user
from django_realtime.output import HeldOutput
from django_realtime.topics.subscriptions import Subscriptions
from presence import tracking
from presence.present import Present

from . import frames, services, streams
from .delivery import JoinedRoom, RoomDelivery
from .fanout import fanout
from .flood import FloodControl
from .models import Room
from .replay import ReplayPacing
from .session_checks import SessionChecks
from .slots import CountedConnection

logger = logging.getLogger(__name__)


class RealtimeConsumer(
    CountedConnection,  # its slot among the user's connections (chat.slots)
    SessionChecks,  # its credential checked again (chat.session_checks)
    FloodControl,  # closed when it floods (chat.flood)
    RoomDelivery,  # rooms in seq order, from the fan-out (chat.delivery)
    ReplayPacing,  # backlogs as the socket takes them (chat.replay)
    HeldOutput,  # output bounded under any server (django_realtime.output)
    AsyncWebsocketConsumer,
):
    """One client connection: authenticate, dispatch frames, forward layer events."""

    user: Any
    joined: dict[int, JoinedRoom]
    slugs: dict[str, int]
    status: str

    async def dispatch(self, message: dict) -> None:
        """Channels' dispatch, minus its database cleanup before every handler.

        Channels 4.2+ hops to its one shared sync thread before each message
        to close stale database connections, serialised across every
        connection of the process, for frames that mostly touch no database.
        Here the queries run through `db()`, which cleans up around each call
        in its own thread. (A copy: django_realtime.internals checks at
        start-up that Channels' own is still the one copied.)
        """
        handler = getattr(self, channels_consumer.get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    # --- connection ------------------------------------------------------------
    async def connect(self) -> None:
        """Accept an authenticated user; close anyone else with 4401, and a
        user's connection beyond WS_MAX_CONNECTIONS_PER_USER with 4429."""
        self.joined, self.slugs, self.status = {}, {}, "online"
        self.start_delivery()
        # Output held here while the server's send would wait (uvicorn past
        # its high-water mark): nobody else waits for this socket.
        self.start_output()
        self.admitted = self.closing = False
        self.start_flood_control()  # this connection's RATE_LIMITED refusals (4408)
        self.user = self.scope.get("user")
        self.start_session_checks()
        if self.user is None or not self.user.is_authenticated:
            await self.accept()
            await self.close(code=CloseCode.UNAUTHENTICATED)
            return
        if not await self.take_slot(self.user.pk):
            cap = realtime_settings.WS_MAX_CONNECTIONS_PER_USER
            await self.accept()
            await self.close(code=CloseCode.TOO_MANY, reason=f"policy: at most {cap} connections")
            return
        log_user.set(str(self.user.pk))  # on every log line of this connection
        self.admitted = True
        self.typist = tracking.Typist(self.user)
        self.topics = Subscriptions(
            user=self.user,
            send_text=self.send_text,
            send_frame=self.send_frame,
            pending_output=self.pending_output if self.output is not None else None,
            overflow=self._overflow,
        )
        await self.accept()  # first: in a reconnect storm, the handshake is what waits
        await bus.add(bus.user_group(self.user.pk), self.channel_name)  # the slot is fresh
        metrics.CONNECTIONS.inc()
        drain.register(self)
        await tracking.connect(user=self.user, channel=self.channel_name)
        fanout().register(self)

    async def disconnect(self, code: int) -> None:
        """Leave every room and the user's group."""
        if not getattr(self, "admitted", False):
            return
        drain.unregister(self)
        metrics.CONNECTIONS.dec()
        fanout().unregister(self)
        for task in list(self.waiting):
            task.cancel()
        self.stop_output()
        for room in list(self.joined.values()):
            await self._leave(room)
        self.typist.cancel_all()
        await self.topics.close()
        await bus.discard(bus.user_group(self.user.pk), self.channel_name)
        await tracking.disconnect(user=self.user, channel=self.channel_name)

    # --- client frames -----------------------------------------------------------
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Validate one frame and dispatch it on its type; errors become error frames."""
        ref = frame = None
        if self.closing:
            return  # closed for flooding; what was queued behind it is dropped
        try:
            if text_data is None:
                raise BadRequest("binary frames are not supported; send JSON text")
            if frames.encoded_size_over(text_data, realtime_settings.WS_MAX_FRAME_BYTES):
                await self.close(code=CloseCode.TOO_LARGE)
                return
            frame = frames.parse(text_data)
            room_name = frame.get("room")
            log_room.set(room_name[:64] if isinstance(room_name, str) else "-")
            ref = frames.ref(frame)
            handler = self.handlers.get(frame["type"])
            metrics.frame_in(frame["type"] if handler else "unknown")
            if handler is None:
                raise BadRequest(f"unknown frame type {frame['type'][:40]!r}")
            await handler(self, frame, ref)
        except ClientError as exc:
            flooding = False
            if isinstance(exc, RateLimited) and frame is not None:
                flooding = self._flooding(frame["type"])  # counted; too many: 4408
            await self.send_frame(frames.error(exc, ref, frame))
            if flooding:
                self.closing = True
                await self.close(code=CloseCode.FLOODING, reason=CloseCode.FLOODING.reason)
        except Exception:  # noqa: BLE001 - never 1011: log it, tell the client, go on
            logger.exception("unexpected error handling a frame from user %s", self.user.pk)
            await self.send_frame(frames.with_ref(frames.INTERNAL_ERROR, ref))

    async def on_join(self, frame: dict, ref: Any) -> None:
        """Subscribe to a room; with `since`, replay every later message once, in order."""
        slug = frames.slug(frame)
        since = frames.seq(frame, "since", required=False)
        await limiter.ahit(("join", self.user.pk), realtime_settings.CHAT_JOIN_RATE)
        hub = fanout()
        # Subscribe before reading where the backlog ends: a message committed
        # meanwhile arrives as a doorbell afterwards and is dropped or
        # delivered by seq. A room the process knows by slug is subscribed
        # before the join's statement, which reads its last seq too (one
        # statement fewer); its events wait in `joining`, unsent, until the
        # join is allowed and answered.
        early = hub.known(slug)
        room: Room | None = None
        try:
            if early is not None:
                self.joining.setdefault(early, [])
                await hub.subscribe(early, self)
            room = await services.room_join_async(user=self.user, slug=slug)
            hub.know(room.slug, room.pk)
            previous = self.joined.get(room.pk)
            if previous is not None and since is None:
                since = previous.cursor.delivered  # a repeated join resumes where it was
            last_seq = room.last_seq if early == room.pk else None
            if last_seq is not None:
                # Subscribed already: enter the room and read who is in it in
                # one step; any later change reaches `joining` as a diff. The
                # others are told of the join; the joiner's `joined` lists it.
                present = await tracking.join(
                    room_id=room.pk,
                    room_slug=room.slug,
                    user=self.user,
                    channel=self.channel_name,
                    status=self.status,
                )
            else:
                # Not subscribed before the join: announce it first (the
                # pub/sub layer may deliver the diff after the group_add
                # below, late even for the joins after this one), then read
                # who is in it, and the last seq, once subscribed.
                await tracking.enter(
                    room_id=room.pk,
                    room_slug=room.slug,
                    user=self.user,
                    channel=self.channel_name,
                    status=self.status,
                    announce_self=False,
                )
                self.joining.setdefault(room.pk, [])
                await hub.subscribe(room.pk, self)
                present = await tracking.present(room_id=room.pk)
            await self._join_room(room, since, previous, ref, last_seq, present)
        finally:
            if room is None:
                hub.forget(slug)  # refused or gone: no early subscription next time
            tried = {early, room.pk if room is not None else None}
            for room_id in (r for r in tried if r is not None):
                self.joining.pop(room_id, None)
                if room_id not in self.joined:  # the join failed: no half membership
                    await hub.unsubscribe(room_id, self)

    async def _join_room(
        self,
        room: Room,
        since: int | None,
        previous: JoinedRoom | None,
        ref: Any,
        last_seq: int | None,
        presence: Present,
    ) -> None:
        if last_seq is None:
            last_seq = await streams.last_seq(room_id=room.pk)
        if since is not None:
            metrics.RESUMES.inc()
        async with self.delivery_lock:
            state = previous or JoinedRoom(
                room_id=room.pk,
                slug=room.slug,
                cursor=streams.room_cursor(room_id=room.pk, room_slug=room.slug),
            )
            streams.start(state.cursor, since=since, last_seq=last_seq)
            self.joined[room.pk] = state
            self.slugs[room.slug] = room.pk
            joined = {
                "type": "joined",
                "room": room.slug,
                "last_seq": last_seq,
                "truncated": streams.truncated(since=since, last_seq=last_seq),
            }
            # The presence list goes in as the text presence keeps it as.
            text = json.dumps(frames.with_ref(joined, ref), ensure_ascii=False)
            await self.send_text(f'{text[:-1]}, "presence": {presence.json()}}}')
            if not await self._replay(state, last_seq, counted=since is not None):
                return  # closed (4413): the client resumes again
            for event in self.joining.pop(room.pk, []):
                await self._handle_room_event(event)

    async def on_leave(self, frame: dict, ref: Any) -> None:
        """Unsubscribe from a room → `left`."""
        slug = frames.slug(frame)
        room = self.joined.get(self.slugs.get(slug, -1))
        if room is not None:
            await self._leave(room)
        await self.send_frame(frames.with_ref({"type": "left", "room": slug}, ref))

    async def on_message(self, frame: dict, ref: Any) -> None:
        """Store and broadcast a message; ack with its id and seq (idempotent by client_id)."""
        slug = frames.slug(frame)
        client_id = frames.required(frame, "client_id", "a UUID the client keeps for retries")
        content = frames.required(frame, "content")
        result = await services.message_send_async(
            user=self.user, slug=slug, content=content, client_id=client_id
        )
        room = self.joined.get(result.room_id)
        if room is not None:
            async with self.delivery_lock:
                await self._deliver(room, result.payload)
        ack = {
            "type": "ack",
            "room": slug,
            "client_id": result.payload["client_id"],
            "id": result.id,
            "seq": result.seq,
        }
        await self.send_frame(frames.with_ref(ack, ref))

    async def on_typing(self, frame: dict, ref: Any) -> None:
        """Tell the room's other users; `true` lapses by itself after 6 s."""
        room = self._joined_room(frame)
        is_typing = frame.get("is_typing")
        if not isinstance(is_typing, bool):
            raise BadRequest("'is_typing' must be true or false")
        if is_typing:
            await limiter.ahit(
                ("typing", self.user.pk, room.room_id), realtime_settings.CHAT_TYPING_RATE
            )
        await self.typist.typing(room_id=room.room_id, room_slug=room.slug, is_typing=is_typing)

    async def on_read(self, frame: dict, ref: Any) -> None:
        """Move the read position; others get a `receipt`."""
        slug = frames.slug(frame)
        seq = frames.seq(frame, "seq", required=True)
        await db(services.read_mark, user=self.user, slug=slug, seq=seq)

    async def on_presence(self, frame: dict, ref: Any) -> None:
        """Set this connection's status (online or away) in every joined room."""
        status = frame.get("status")
        if status not in tracking.STATUSES:
            raise BadRequest("'status' must be 'online' or 'away'")
        self.status = status
        for room in self.joined.values():
            await tracking.enter(
                room_id=room.room_id,
                room_slug=room.slug,
                user=self.user,
                channel=self.channel_name,
                status=status,
                announce_self=True,
            )

    async def on_subscribe(self, frame: dict, ref: Any) -> None:
        """Subscribe to a live-data topic → `subscribed`, the replay, then
        publications (django_realtime.topics; docs/topics.md)."""
        await limiter.ahit(("subscribe", self.user.pk), realtime_settings.TOPICS_SUBSCRIBE_RATE)
        await self.topics.subscribe(frame, ref)

    async def on_unsubscribe(self, frame: dict, ref: Any) -> None:
        """Stop a topic → `unsubscribed`."""
        await self.topics.unsubscribe(frame, ref)

    async def on_ping(self, frame: dict, ref: Any) -> None:
        """Answer `pong`."""
        await self.send_frame(frames.with_ref({"type": "pong"}, ref))

    # The allowlist of client frame types. Nothing else is ever dispatched, so a
    # client cannot reach a layer handler by naming it.
    handlers: dict[str, Callable[..., Awaitable[None]]] = {
        "join": on_join,
        "leave": on_leave,
        "message": on_message,
        "typing": on_typing,
        "read": on_read,
        "presence": on_presence,
        "subscribe": on_subscribe,
        "unsubscribe": on_unsubscribe,
        "ping": on_ping,
    }

    # --- the fan-out's refresh (room events: chat.delivery) ---------------------------
    async def refresh_user_group(self) -> bool:
        """Re-add the user's group: memberships expire, and a restarted Redis
        has none. Called by the fan-out's refresher (which renews every
        connection's slot first, together), which is also when the credential
        is re-checked once it is due."""
        self._recheck_when_due()
        return await bus.add(bus.user_group(self.user.pk), self.channel_name)

    # --- layer events (room events by way of the fan-out; the user group directly) -----
    async def presence_typing(self, event: dict) -> None:
        """Someone is typing: forward, unless it is this user."""
        payload = event["payload"]
        if event["room_id"] in self.joined and payload["user"]["id"] != self.user.pk:
            await self.send_frame(payload)

    async def chat_receipt(self, event: dict) -> None:
        """A read position moved."""
        if event["room_id"] in self.joined:
            await self.send_frame(event["payload"])

    async def chat_message_deleted(self, event: dict) -> None:
        """A moderator removed a message."""
        if event["room_id"] in self.joined:
            await self.send_frame(event["payload"])

    async def chat_kicked(self, event: dict) -> None:
        """This user was banned from a room: leave it and say so."""
        room = self.joined.get(event["room_id"])
        if room is not None:
            await self._leave(room)
        await self.send_frame(event["payload"])

    async def presence_diff(self, event: dict) -> None:
        """Someone joined, left or changed status in a joined room (not this
        connection's own join: its `joined` list had it)."""
        if event["room_id"] not in self.joined:
            return
        payload = event["payload"]
        me = event.get("joiners", {}).get(self.channel_name)
        if me is not None:
            payload = {**payload, "joins": [j for j in payload["joins"] if j["user"]["id"] != me]}
            if not payload["joins"] and not payload["leaves"]:
                return
        await self.send_frame(payload)

    async def session_end(self, event: dict) -> None:
        """The credential this connection was opened with ended (a logout, a
        deleted token): close with 4401 (django_realtime.credentials)."""
        if credentials.ends(event, self.credential):
            await self._end_session()

    async def session_recheck(self, event: dict) -> None:
        """The user changed (deactivated, a new password): check again."""
        await self._recheck()

    async def notify_notification(self, event: dict) -> None:
        """A notification for this user (notifications.events): forward it."""
        await self.send_frame(event["payload"])

    async def send_frame(self, frame: dict, *, replay: bool = False) -> None:
        """Send one frame. A `replay` (a backlog, a catch-up from the database)
        is marked so, for the bound on unsent output (daphne_transport)."""
        await self.send_text(json.dumps(frame, ensure_ascii=False), replay=replay)

    async def send_text(self, text: str, *, replay: bool = False) -> None:
        """Send one frame already encoded."""
        if replay:
            message = {"type": "websocket.send", "text": text, "realtime.replay": True}
            await self.send_bounded(message, len(text), replay=True)
        elif not self.send_now(text):
            await self.send_bounded({"type": "websocket.send", "text": text}, len(text))
        metrics.FRAMES_OUT.inc()

    # --- rooms ------------------------------------------------------------------------
    def _joined_room(self, frame: dict) -> JoinedRoom:
        slug = frames.slug(frame)
        room = self.joined.get(self.slugs.get(slug, -1))
        if room is None:
            raise BadRequest(f"join {slug!r} first")
        return room

    async def _leave(self, room: JoinedRoom) -> None:
        self.joined.pop(room.room_id, None)
        self.slugs.pop(room.slug, None)
        await self.typist.stop(room_id=room.room_id, room_slug=room.slug)
        await fanout().unsubscribe(room.room_id, self)
        await tracking.exit(
            room_id=room.room_id, room_slug=room.slug, user=self.user, channel=self.channel_name
        )
