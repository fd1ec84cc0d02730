"""
Provides RealtimeConsumer, the one `/ws/` endpoint: every room, the user's
notifications and presence over one connection.

Delivery: each joined room keeps `delivered`, the highest seq this connection
has been sent. Layer events are doorbells carrying the message; one that is
already delivered is dropped, and one that arrives ahead of a gap first pulls
the missing seqs from the database. So every connection gets each message once,
in seq order, whatever the layer drops or reorders.
"""

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer

from django_realtime import drain, metrics
from django_realtime.conf import realtime_settings
from django_realtime.errors import BadRequest, ClientError, RateLimited, Unavailable
from django_realtime.logcontext import log_room, log_user
from django_realtime.strictjson import check_text
from presence import events as presence_events
from presence import transitions as presence_transitions
from presence.store import STATUSES
from presence.store import store as presence_store

from . import asyncsend, events, selectors, services
from .asyncdb import db
from .fanout import fanout
from .models import Room
from .ratelimit import SlidingWindowLimiter, limiter

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_TOO_LARGE = 1009  # sendable under daphne thanks to django_realtime/daphne_transport.py
CLOSE_FLOODING = 4408  # refused with RATE_LIMITED more than WS_FLOOD_CLOSE_RATE allows
CLOSE_TOO_MANY_CONNECTIONS = 4429  # over WS_MAX_CONNECTIONS_PER_USER in this process
TYPING_LAPSE_SECONDS = 6.0  # the contract: typing lapses 6 s after the last `true`
MAX_SEQ = 2**63 - 1
MAX_REF_CHARS = 128


@dataclass
class JoinedRoom:
    room_id: int
    slug: str
    delivered: int
    typing_lapse: asyncio.Task | None = field(default=None, repr=False)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_frame(text: str) -> dict[str, Any]:
    """A client frame as a dict, or BadRequest saying what is wrong with it."""
    try:
        frame = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise BadRequest("frame is not valid JSON") from None
    if not isinstance(frame, dict):
        raise BadRequest("frame must be a JSON object")
    check_text(frame)  # no NUL, no lone surrogate in any string: it could not be echoed
    if not isinstance(frame.get("type"), str):
        raise BadRequest("frame needs a string 'type'")
    return frame


def field_slug(frame: dict, name: str = "room") -> str:
    value = frame.get(name)
    if not isinstance(value, str) or not value or len(value) > 64:
        raise BadRequest(f"'{name}' must be a room slug")
    return value


def field_seq(frame: dict, name: str, *, required: bool) -> int | None:
    value = frame.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEQ:
        raise BadRequest(f"'{name}' must be a non-negative integer")
    return value


# Open connections per user in this process (WS_MAX_CONNECTIONS_PER_USER).
_open_connections: Counter[int] = Counter()


class RealtimeConsumer(AsyncWebsocketConsumer):
    """One client connection: authenticate, dispatch frames, forward layer events."""

    user: Any
    joined: dict[int, JoinedRoom]
    slugs: dict[str, int]
    status: str

    async def dispatch(self, message: dict) -> None:
        """Channels' dispatch, minus its database cleanup before every handler.

        Channels 4.2+ hops to its one shared sync thread before each message
        to close stale database connections: 50-70 µs serialised across every
        connection of the process, for frames that mostly touch no database.
        Here the queries run through `db()`, which cleans up around each call
        in its own thread.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    # --- connection ------------------------------------------------------------
    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        # The connection's slot is given back however the consumer ends.
        self.counted_user: int | None = None
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self.counted_user is not None:
                _open_connections[self.counted_user] -= 1
                if _open_connections[self.counted_user] <= 0:
                    del _open_connections[self.counted_user]
                self.counted_user = None

    async def connect(self) -> None:
        """Accept an authenticated user; close anyone else with 4401, and a
        user's connection beyond WS_MAX_CONNECTIONS_PER_USER with 4429."""
        self.joined, self.slugs, self.status = {}, {}, "online"
        # Room events that arrive while a join of that room is under way wait
        # here, and are delivered by seq once the join has sent its backlog.
        self.joining: dict[int, list[dict]] = {}
        # Deliveries that had to wait for the lock (a gap fill, a join): tasks.
        self.waiting: set[asyncio.Task] = set()
        self.admitted = self.closing = False
        # This connection's RATE_LIMITED refusals, to close a flooder (4408).
        self.refusals = SlidingWindowLimiter(max_keys=1)
        # Serialises delivery between the dispatch loop and the refresher task.
        self.delivery_lock = asyncio.Lock()
        self.user = self.scope.get("user")
        if self.user is None or not self.user.is_authenticated:
            await self.accept()
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        cap = realtime_settings.WS_MAX_CONNECTIONS_PER_USER
        if cap and _open_connections[self.user.pk] >= cap:
            await self.accept()
            await self.close(
                code=CLOSE_TOO_MANY_CONNECTIONS, reason=f"policy: at most {cap} connections"
            )
            return
        log_user.set(str(self.user.pk))  # on every log line of this connection
        _open_connections[self.user.pk] += 1
        self.counted_user = self.user.pk
        self.admitted = True
        await self.accept()  # first: in a reconnect storm, the handshake is what waits
        await self._group_add(events.user_group(self.user.pk))
        metrics.CONNECTIONS.inc()
        drain.register(self)
        await presence_store.connect(
            user_id=self.user.pk, username=self.user.get_username(), channel=self.channel_name
        )
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
        for room in list(self.joined.values()):
            await self._leave(room)
        try:
            await self.channel_layer.group_discard(
                events.user_group(self.user.pk), self.channel_name
            )
        except Exception as exc:  # noqa: BLE001 - the socket is gone either way
            logger.warning("group_discard on disconnect failed: %r", exc)
        departure = await presence_store.disconnect(user_id=self.user.pk, channel=self.channel_name)
        await presence_transitions.announce_departure(user_id=self.user.pk, departure=departure)

    # --- client frames -----------------------------------------------------------
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Validate one frame and dispatch it on its type; errors become error frames."""
        ref = frame = None
        if self.closing:
            return  # closed for flooding; what was queued behind it is dropped
        try:
            if text_data is None:
                raise BadRequest("binary frames are not supported; send JSON text")
            if len(text_data) * 4 > realtime_settings.WS_MAX_FRAME_BYTES and (
                len(text_data.encode("utf-8", "surrogatepass"))
                > realtime_settings.WS_MAX_FRAME_BYTES
            ):
                await self.close(code=CLOSE_TOO_LARGE)
                return
            frame = parse_frame(text_data)
            room_name = frame.get("room")
            log_room.set(room_name[:64] if isinstance(room_name, str) else "-")
            ref = frame.get("ref")
            if ref is not None and not (
                (isinstance(ref, str) and len(ref) <= MAX_REF_CHARS)
                or (isinstance(ref, int) and not isinstance(ref, bool) and abs(ref) <= MAX_SEQ)
            ):
                ref = None
                raise BadRequest(
                    f"'ref' must be a string of at most {MAX_REF_CHARS} characters or an integer"
                )
            handler = self.handlers.get(frame["type"])
            metrics.FRAMES_IN.labels(frame["type"] if handler else "unknown").inc()
            if handler is None:
                raise BadRequest(f"unknown frame type {frame['type'][:40]!r}")
            await handler(self, frame, ref)
        except ClientError as exc:
            error = _error(exc, ref)
            flooding = False
            if isinstance(exc, RateLimited):
                metrics.RATE_LIMITED.labels(frame["type"]).inc()
                error["retry_after"] = round(exc.retry_after_seconds, 1)
                flooding = self._flooding()
            if frame is not None and frame["type"] == "message":
                # A client matches a refused send to its outbox entry by this.
                client_id = frame.get("client_id")
                if isinstance(client_id, str) and len(client_id) <= 64:
                    error["client_id"] = client_id
            await self.send_frame(error)
            if flooding:
                self.closing = True
                await self.close(code=CLOSE_FLOODING, reason="policy: too many requests")
        except Exception:  # noqa: BLE001 - never 1011: log it, tell the client, go on
            logger.exception("unexpected error handling a frame from user %s", self.user.pk)
            await self.send_frame(
                {
                    "type": "error",
                    "code": "UNAVAILABLE",
                    "message": "internal error; retry",
                    **_ref(ref),
                }
            )

    async def on_join(self, frame: dict, ref: Any) -> None:
        """Subscribe to a room; with `since`, replay every later message once, in order."""
        slug = field_slug(frame)
        since = field_seq(frame, "since", required=False)
        limiter.hit(("join", self.user.pk), realtime_settings.CHAT_JOIN_RATE)
        room, _membership = await db(services.room_join, user=self.user, slug=slug)
        previous = self.joined.get(room.pk)
        if previous is not None and since is None:
            since = previous.delivered  # a repeated join resumes where it was
        # Announce the join; the joiner itself is skipped (the pub/sub layer
        # may deliver the diff after the group_add below), since its `joined`
        # list already includes it.
        await self._enter_presence(room.pk, room.slug, skip_self=True)
        # Subscribe before reading the backlog: a message committed meanwhile
        # arrives as a doorbell afterwards and is dropped or delivered by seq.
        self.joining.setdefault(room.pk, [])
        try:
            await fanout().subscribe(room.pk, self)
            await self._join_room(room, since, previous, ref)
        finally:
            self.joining.pop(room.pk, None)
            if room.pk not in self.joined:  # the join failed: no half membership
                await fanout().unsubscribe(room.pk, self)

    async def _join_room(
        self, room: Room, since: int | None, previous: JoinedRoom | None, ref: Any
    ) -> None:
        backlog, last_seq = await db(self._backlog, room_id=room.pk, since=since)
        truncated = (
            since is not None and last_seq - since > realtime_settings.CHAT_RESUME_MAX_MESSAGES
        )
        if since is not None:
            metrics.RESUMES.inc()
            metrics.RESUME_REPLAYED.inc(sum(1 for m in backlog if not m.is_deleted))
        presence = await presence_store.members(room_id=room.pk)
        async with self.delivery_lock:
            state = previous or JoinedRoom(room_id=room.pk, slug=room.slug, delivered=0)
            # A `since` beyond the room's end (a client that outlived a database
            # restore) resumes from the end rather than skipping future messages.
            state.delivered = last_seq if since is None else min(since, last_seq)
            self.joined[room.pk] = state
            self.slugs[room.slug] = room.pk
            await self.send_frame(
                {
                    "type": "joined",
                    "room": room.slug,
                    "last_seq": last_seq,
                    "presence": presence,
                    "truncated": truncated,
                    **_ref(ref),
                }
            )
            for message in backlog:
                if message.seq > state.delivered:
                    if not message.is_deleted:
                        await self.send_frame(events.message_payload(message, room.slug))
                    state.delivered = message.seq
            state.delivered = max(state.delivered, last_seq)
            for event in self.joining.pop(room.pk, []):
                await self._handle_room_event(event)

    @staticmethod
    def _backlog(*, room_id: int, since: int | None) -> tuple[list, int]:
        last_seq = selectors.room_last_seq(room_id=room_id)
        if since is None or since >= last_seq:
            return [], last_seq
        rows = selectors.messages_since(
            room_id=room_id,
            since=since,
            until=last_seq,
            limit=realtime_settings.CHAT_RESUME_MAX_MESSAGES,
        )
        return rows, last_seq

    async def on_leave(self, frame: dict, ref: Any) -> None:
        """Unsubscribe from a room → `left`."""
        slug = field_slug(frame)
        room = self.joined.get(self.slugs.get(slug, -1))
        if room is not None:
            await self._leave(room)
        await self.send_frame({"type": "left", "room": slug, **_ref(ref)})

    async def on_message(self, frame: dict, ref: Any) -> None:
        """Store and broadcast a message; ack with its id and seq (idempotent by client_id)."""
        slug = field_slug(frame)
        if "client_id" not in frame:
            raise BadRequest("'client_id' is required (a UUID the client keeps for retries)")
        if "content" not in frame:
            raise BadRequest("'content' is required")
        result = await asyncsend.message_send(
            user=self.user,
            slug=slug,
            content=frame["content"],
            client_id=frame["client_id"],
        )
        room = self.joined.get(result.message.room_id)
        if room is not None:
            await self._deliver(room, result.payload)
        await self.send_frame(
            {
                "type": "ack",
                "room": slug,
                "client_id": result.payload["client_id"],
                "id": result.message.pk,
                "seq": result.message.seq,
                **_ref(ref),
            }
        )

    async def on_typing(self, frame: dict, ref: Any) -> None:
        """Tell the room's other users; `true` lapses by itself after 6 s."""
        room = self._joined_room(frame)
        is_typing = frame.get("is_typing")
        if not isinstance(is_typing, bool):
            raise BadRequest("'is_typing' must be true or false")
        if is_typing:
            limiter.hit(("typing", self.user.pk, room.room_id), realtime_settings.CHAT_TYPING_RATE)
        self._cancel_typing_lapse(room)
        if is_typing:
            room.typing_lapse = asyncio.create_task(self._typing_lapse(room))
        await self._typing_lease(room, is_typing=is_typing)
        await events.broadcast_typing(
            room_id=room.room_id,
            room_slug=room.slug,
            user=events.user_payload(self.user),
            is_typing=is_typing,
        )

    async def on_read(self, frame: dict, ref: Any) -> None:
        """Move the read position; others get a `receipt`."""
        slug = field_slug(frame)
        seq = field_seq(frame, "seq", required=True)
        await db(services.read_mark, user=self.user, slug=slug, seq=seq)

    async def on_presence(self, frame: dict, ref: Any) -> None:
        """Set this connection's status (online or away) in every joined room."""
        status = frame.get("status")
        if status not in STATUSES:
            raise BadRequest("'status' must be 'online' or 'away'")
        self.status = status
        for room in self.joined.values():
            await self._enter_presence(room.room_id, room.slug)

    async def on_ping(self, frame: dict, ref: Any) -> None:
        """Answer `pong`."""
        await self.send_frame({"type": "pong", **_ref(ref)})

    # The allowlist of client frame types. Nothing else is ever dispatched, so a
    # client cannot reach a layer handler by naming it.
    handlers: dict[str, Callable[..., Awaitable[None]]] = {
        "join": on_join,
        "leave": on_leave,
        "message": on_message,
        "typing": on_typing,
        "read": on_read,
        "presence": on_presence,
        "ping": on_ping,
    }

    # --- room events, from the process's fan-out (chat/fanout.py) -----------------------
    async def fanout_message(self, room_id: int, seq: int, payload: dict, text: str) -> bool:
        """A message stored in a joined room, serialised once for the process:
        sent at once when it is the next seq and nothing else is being sent
        (True; the fan-out counts those frames), else held or dropped by seq."""
        if room_id in self.joining:
            self.joining[room_id].append(message_event(room_id, payload))
            return False
        room = self.joined.get(room_id)
        if room is None or seq <= room.delivered:
            return False
        if seq == room.delivered + 1 and not self.delivery_lock.locked():
            room.delivered = seq
            await self.base_send({"type": "websocket.send", "text": text})
            return True
        self._under_lock(partial(self._handle_room_event, message_event(room_id, payload)))
        return False

    async def fanout_event(self, event: dict) -> None:
        """Any other room event (typing, receipt, deletion, presence diff)."""
        if event["room_id"] in self.joining:
            self.joining[event["room_id"]].append(event)
        elif self.delivery_lock.locked():
            self._under_lock(partial(self._handle_room_event, event))
        else:
            await self._handle_room_event(event)

    def _under_lock(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run `work` with the delivery lock, after what holds it now (in
        order: the lock is FIFO), in a task of its own."""

        async def locked() -> None:
            async with self.delivery_lock:
                await work()

        task = asyncio.create_task(locked())
        self.waiting.add(task)
        task.add_done_callback(self.waiting.discard)

    async def _handle_room_event(self, event: dict) -> None:
        """A room event, with the delivery lock held or not needed."""
        if event["type"] == events.MESSAGE:
            room = self.joined.get(event["room_id"])
            if room is not None:
                await self._deliver_locked(room, event["payload"])
        else:
            await self.dispatch(event)

    # --- layer events (room events by way of fanout_event; the user group directly) -----
    async def chat_typing(self, event: dict) -> None:
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

    async def notify_notification(self, event: dict) -> None:
        """A notification for this user (notifications.events): forward it."""
        await self.send_frame(event["payload"])

    # --- helpers ----------------------------------------------------------------------
    def _flooding(self) -> bool:
        """Count a RATE_LIMITED refusal; True once there were too many."""
        try:
            self.refusals.hit(("rate_limited",), realtime_settings.WS_FLOOD_CLOSE_RATE)
        except RateLimited:
            logger.info("closing a flooding connection of user %s (4408)", self.user.pk)
            return True
        return False

    async def send_frame(self, frame: dict) -> None:
        await self.send(text_data=json.dumps(frame, ensure_ascii=False))
        metrics.FRAMES_OUT.inc()

    def _joined_room(self, frame: dict) -> JoinedRoom:
        slug = field_slug(frame)
        room = self.joined.get(self.slugs.get(slug, -1))
        if room is None:
            raise BadRequest(f"join {slug!r} first")
        return room

    async def _deliver(self, room: JoinedRoom, payload: dict) -> None:
        async with self.delivery_lock:
            await self._deliver_locked(room, payload)

    async def _deliver_locked(self, room: JoinedRoom, payload: dict) -> None:
        seq = payload["seq"]
        if seq <= room.delivered:
            return  # a duplicate doorbell, or one the backlog already covered
        if seq > room.delivered + 1:
            await self._fill_gap(room, until=seq - 1)
        await self.send_frame(payload)
        room.delivered = seq

    async def _fill_gap(self, room: JoinedRoom, until: int) -> None:
        """Send seqs delivered+1..until from the database. Every one of them is
        committed: seqs commit in order, and a later one has been seen."""
        try:
            rows = await db(
                selectors.messages_since,
                room_id=room.room_id,
                since=room.delivered,
                until=until,
                limit=realtime_settings.CHAT_RESUME_MAX_MESSAGES,
            )
        except Unavailable:
            return  # the client sees the seq jump and can fill it from REST
        for message in rows:
            if message.seq > room.delivered and not message.is_deleted:
                await self.send_frame(events.message_payload(message, room.slug))
                metrics.GAP_FILLS.inc()
            room.delivered = max(room.delivered, message.seq)

    async def _enter_presence(self, room_id: int, room_slug: str, *, skip_self: bool = False):
        """Put this connection in the room's presence with its status; a
        transition of the user's presence there is broadcast as a diff."""
        change = await presence_store.enter(
            room_id=room_id,
            room_slug=room_slug,
            user_id=self.user.pk,
            username=self.user.get_username(),
            channel=self.channel_name,
            status=self.status,
        )
        if change is not None:
            await presence_events.broadcast_changes(
                room_id=room_id,
                room_slug=room_slug,
                changes=[change],
                skip_channel=self.channel_name if skip_self else None,
            )

    async def _group_add(self, group: str) -> bool:
        """Join a layer group, bounded in time; on failure the refresher retries."""
        return await events.group_add(group, self.channel_name)

    # --- the fan-out's refresh (every GROUP_REFRESH_SECONDS, and when Redis is back) ---
    async def refresh_user_group(self) -> bool:
        """Re-add the user's group (memberships expire, and a restarted Redis has none)."""
        return await self._group_add(events.user_group(self.user.pk))

    def catch_up(self, room_id: int, last_seq: int) -> None:
        """The room is at `last_seq`: fill from the database what did not ring."""
        room = self.joined.get(room_id)
        if room is not None and last_seq > room.delivered:

            async def fill() -> None:
                room = self.joined.get(room_id)  # still joined, once the lock is ours
                if room is not None and last_seq > room.delivered:
                    await self._fill_gap(room, until=last_seq)

            self._under_lock(fill)

    async def _leave(self, room: JoinedRoom) -> None:
        self.joined.pop(room.room_id, None)
        self.slugs.pop(room.slug, None)
        if room.typing_lapse is not None:
            self._cancel_typing_lapse(room)
            await self._typing_lease(room, is_typing=False)
            await events.broadcast_typing(
                room_id=room.room_id,
                room_slug=room.slug,
                user=events.user_payload(self.user),
                is_typing=False,
            )
        await fanout().unsubscribe(room.room_id, self)
        change = await presence_store.exit(
            room_id=room.room_id, user_id=self.user.pk, channel=self.channel_name
        )
        if change is not None:
            await presence_events.broadcast_changes(
                room_id=room.room_id, room_slug=room.slug, changes=[change]
            )

    def _cancel_typing_lapse(self, room: JoinedRoom) -> None:
        if room.typing_lapse is not None:
            room.typing_lapse.cancel()
            room.typing_lapse = None

    async def _typing_lapse(self, room: JoinedRoom) -> None:
        await asyncio.sleep(TYPING_LAPSE_SECONDS)
        room.typing_lapse = None
        # False when a sweep in another process announced the lapse already
        # (this process stalled past the lease).
        if await self._typing_lease(room, is_typing=False):
            await events.broadcast_typing(
                room_id=room.room_id,
                room_slug=room.slug,
                user=events.user_payload(self.user),
                is_typing=False,
            )

    async def _typing_lease(self, room: JoinedRoom, *, is_typing: bool) -> bool:
        """Start or end the typist's lease in the presence store, so that the
        lapse is announced by a sweep if this process dies. Ending it says
        whether it was still running (whether the `false` is ours to send)."""
        who = {
            "room_id": room.room_id,
            "room_slug": room.slug,
            "user_id": self.user.pk,
            "username": self.user.get_username(),
        }
        if is_typing:
            await presence_store.typing_start(**who, ttl_seconds=TYPING_LAPSE_SECONDS)
            return True
        return await presence_store.typing_stop(**who)


def message_event(room_id: int, payload: dict) -> dict:
    return {"type": events.MESSAGE, "room_id": room_id, "payload": payload}


def _ref(ref: Any) -> dict:
    return {} if ref is None else {"ref": ref}


def _error(exc: ClientError, ref: Any) -> dict:
    return {"type": "error", "code": exc.code, "message": exc.message, **_ref(ref)}
