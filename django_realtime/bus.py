"""
Provides the one door to the channel layer: group names, bounded sends, adds
and discards, an `Inbox` for receivers that are not consumers (the room
fan-out, SSE streams) and the layer's `epoch`. Each app's `events.py` sends
through here, and no other module calls the layer.

(docs/architecture.md, "Why the modules are as they are")
"""

import asyncio
import hashlib
import logging
from collections import deque
from typing import Any

from asgiref.sync import SyncToAsync, async_to_sync
from channels.layers import get_channel_layer

from . import metrics
from .background import spawn
from .conf import realtime_settings

logger = logging.getLogger(__name__)

# Sends in flight at once from one send_many call, so a fan-out to thousands
# of groups (an announcement) never exhausts the layer's connection pool.
SEND_BATCH = 100
# How long an Inbox waits after a failed receive before trying again.
RECEIVE_RETRY_SECONDS = 0.5

Event = dict[str, Any]


# --- group names ---------------------------------------------------------------------
def room_group(room_id: int) -> str:
    """The layer group of a room's receivers (one per process: the fan-out, SSE)."""
    return f"chat.room.{room_id}"


def user_group(user_id: int) -> str:
    """The layer group of every connection and stream of one user."""
    return f"chat.user.{user_id}"


def topic_group(topic: str) -> str:
    """The layer group of a topic's receivers (one per process). A digest:
    topic names may hold ':', which group names may not."""
    return "topic." + hashlib.blake2b(topic.encode(), digest_size=12).hexdigest()


# --- the layer's state ----------------------------------------------------------------
def epoch() -> int:
    """Moves each time Redis answers again after a failure (django_realtime.layers);
    a receiver that saw it move re-adds its groups and catches up. Always 0 on
    a layer that does not keep one (the in-memory layer loses nothing)."""
    return getattr(get_channel_layer(), "epoch", 0)


def watches_epoch() -> bool:
    """Whether the configured layer keeps an epoch worth polling."""
    return hasattr(get_channel_layer(), "epoch")


def _failed(op: str, what: str, exc: BaseException) -> None:
    logger.warning("layer %s %s failed: %r", op, what, exc)
    metrics.LAYER_ERRORS.labels(op).inc()
    note_failure = getattr(get_channel_layer(), "note_failure", None)
    if note_failure is not None:
        note_failure()


async def _bounded(op: str, what: str, call: Any) -> bool:
    try:
        async with asyncio.timeout(realtime_settings.LAYER_SEND_TIMEOUT_SECONDS):
            await call  # no task of its own, as wait_for would make
        return True
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - redis-py raises many kinds; all are outages
        _failed(op, what, exc)
        return False


# --- calls ------------------------------------------------------------------------------
async def send(group: str, event: Event) -> bool:
    """group_send, bounded in time; False (logged, counted) when the layer failed."""
    layer = get_channel_layer()
    if layer is None:
        return False
    return await _bounded("group_send", group, layer.group_send(group, event))


async def send_many(sends: list[tuple[str, Event]]) -> None:
    """send() to many groups, SEND_BATCH at a time."""
    if len(sends) == 1:  # a post's doorbell: no task to gather
        await send(*sends[0])
        return
    for start in range(0, len(sends), SEND_BATCH):
        batch = sends[start : start + SEND_BATCH]
        await asyncio.gather(*(send(group, event) for group, event in batch))


async def add(group: str, channel: str) -> bool:
    """group_add, bounded in time; False when the layer failed (retry later)."""
    layer = get_channel_layer()
    return await _bounded("group_add", group, layer.group_add(group, channel))


async def discard(group: str, channel: str) -> bool:
    """group_discard, bounded in time; False when the layer failed (the
    membership expires by itself; an extra doorbell meanwhile is harmless)."""
    layer = get_channel_layer()
    return await _bounded("group_discard", group, layer.group_discard(group, channel))


async def new_channel(prefix: str = "") -> str:
    return await get_channel_layer().new_channel(prefix=f"{prefix}." if prefix else "specific.")


# --- from synchronous code --------------------------------------------------------------
def send_sync(group: str, event: Event) -> None:
    """send() from synchronous code (services, on_commit callbacks)."""
    send_many_sync([(group, event)])


def send_many_sync(sends: list[tuple[str, Event]]) -> None:
    """send_many() from synchronous code, in one trip to the event loop (a
    worker sending 1,000 notifications pays for one loop, not 1,000).

    Inside a server the sends are handed to its event loop and not waited for:
    the caller (a post's ack, a REST response) depends on the database write
    only, never on the layer. Outside one (a management command, a worker)
    they run to completion before this returns.
    """
    try:
        here = asyncio.get_running_loop()  # called on the event loop itself
    except RuntimeError:
        here = None
    if here is not None:
        spawn(send_many(sends))
        return
    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    if loop is not None and loop.is_running():
        loop.call_soon_threadsafe(spawn, send_many(sends))
    else:
        async_to_sync(send_many)(sends)


# --- receiving outside a consumer ---------------------------------------------------------
class Inbox:
    """A private layer channel in some groups: how a receiver that is not a
    consumer (the room fan-out, an SSE stream) gets layer events.

    `stale` says when memberships may be gone (an add failed, or Redis came
    back since): call `refresh()` and catch up from the database.

    With `local=True` the receiver also takes events from its own process
    (`put_local`: a Python object, never through the layer; the topic hub's
    rounds to an SSE stream), which `next()` returns first.
    """

    def __init__(self, groups: list[str] | None = None, *, prefix: str = "", local: bool = False):
        self.groups: dict[str, int | None] = dict.fromkeys(groups or [])  # group -> epoch added
        self.prefix = prefix
        self.channel = ""
        self._receiving: asyncio.Future | None = None
        self.local = local
        self._local: deque[Event] = deque()
        self._local_ready: asyncio.Future | None = None

    def put_local(self, event: Event) -> None:
        """Deliver `event` from this process: the next `next()` returns it."""
        if not self.local:
            raise RuntimeError("this Inbox was not opened for local events (local=True)")
        self._local.append(event)
        if self._local_ready is not None and not self._local_ready.done():
            self._local_ready.set_result(None)

    async def open(self) -> bool:
        """Make the channel and join the groups; False if an add failed."""
        if not self.channel:
            self.channel = await new_channel(self.prefix)
        return await self.refresh()

    async def join(self, group: str) -> bool:
        """Add one group (again, if it may be stale); False when the layer failed."""
        self.groups[group] = None
        current = epoch()
        if not await add(group, self.channel):
            return False
        if group in self.groups:  # not left meanwhile
            self.groups[group] = current
        return True

    async def leave(self, group: str) -> None:
        if self.groups.pop(group, False) is not False:
            await discard(group, self.channel)

    async def refresh(self) -> bool:
        """(Re-)join every group: memberships expire, and a Redis restarted
        empty has none. False if the layer failed."""
        results = [await self.join(group) for group in list(self.groups)]
        return all(results)

    @property
    def stale(self) -> bool:
        current = epoch()
        return any(added != current for added in self.groups.values())

    async def next(self, timeout: float | None = None) -> Event | None:
        """The next event, or None after `timeout` seconds (or a failed receive).

        A timeout never cancels the receive: a cancelled channels_redis
        receive drops whatever it had buffered for the channel. The pending
        receive is kept for the next call instead.
        """
        if self._local:
            return self._local.popleft()
        if timeout is None and self._receiving is None and not self.local:
            # Nothing to keep pending across calls: a plain await, the cheap way.
            try:
                return await get_channel_layer().receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the layer is down; wait, then retry
                _failed("receive", self.channel, exc)
                await asyncio.sleep(RECEIVE_RETRY_SECONDS)
                return None
        if self._receiving is None:
            self._receiving = asyncio.ensure_future(get_channel_layer().receive(self.channel))
        waiting: set[asyncio.Future] = {self._receiving}
        if self.local:
            self._local_ready = asyncio.get_running_loop().create_future()
            waiting.add(self._local_ready)
        try:
            done, _ = await asyncio.wait(
                waiting,
                timeout=None if timeout is None else max(0.0, timeout),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            self._local_ready = None
        if self._local:
            return self._local.popleft()  # a layer event that came too waits for the next call
        if self._receiving not in done:
            return None
        receiving, self._receiving = self._receiving, None
        try:
            return receiving.result()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the layer is down; wait, then retry
            _failed("receive", self.channel, exc)
            await asyncio.sleep(RECEIVE_RETRY_SECONDS if timeout is None else min(1.0, timeout))
            return None

    async def close(self) -> None:
        """Stop receiving and leave the groups (the receiver has gone)."""
        self._local.clear()
        if self._receiving is not None:
            self._receiving.cancel()
            self._receiving = None
        if self.channel:
            for group in list(self.groups):
                await self.leave(group)
