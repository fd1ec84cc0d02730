"""
Provides calls from concurrent callers sent together: `Outbox` (one sender
task takes whatever was queued meanwhile) and `Batched` on it, one asyncio
Redis client's commands in one pipeline, each caller its own reply.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.exceptions import NoScriptError


class Outbox:
    """Calls from concurrent callers, sent together: a call queues its item
    and waits; one sender task takes everything queued by then and hands it
    to `send`, which settles each item's future (`settle`), and goes again
    while more came meanwhile. A lone call costs what it did; a burst shares
    the round trip. A caller that stops waiting (a timeout) does not take
    its item back: it may still be sent, as a cancelled redis-py call may.
    Batched and the pub/sub layer's shards (django_realtime.layers) send
    through one."""

    def __init__(self, send: Callable[[list[tuple[Any, asyncio.Future]]], Awaitable[None]]):
        self.send = send
        self.queued: list[tuple[Any, asyncio.Future]] = []
        self.sender: asyncio.Task | None = None

    def put(self, item: Any) -> asyncio.Future:
        """Queue `item`; await the future for its outcome, once sent (raised
        if it failed). A plain future, no coroutine: this is on every call."""
        future = asyncio.get_running_loop().create_future()
        self.queued.append((item, future))
        if self.sender is None:
            self.sender = asyncio.ensure_future(self._send())
        return future

    async def put_many(self, items: list[Any]) -> list[Any]:
        """put() of each, queued at once (so sent together); the first failure raises."""
        return list(await asyncio.gather(*[self.put(item) for item in items]))

    async def _send(self) -> None:
        taken: list[tuple[Any, asyncio.Future]] = []
        try:
            while self.queued:
                taken, self.queued = self.queued, []
                await self.send(taken)
        except asyncio.CancelledError:  # the loop is ending: nobody is left waiting
            for _, future in taken + self.queued:
                future.cancel()
            self.queued = []
            raise
        finally:
            self.sender = None


def settle(future: asyncio.Future, outcome: Any) -> None:
    """An Outbox item's outcome: an exception is raised to its caller."""
    if future.done():
        return  # its caller stopped waiting
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _evalsha(script: Any, keys: Sequence[Any], args: Sequence[Any]) -> tuple[tuple, str]:
    """A Batched item: the EVALSHA command and the source to load if Redis lost it."""
    return ("EVALSHA", script.sha, len(keys), *keys, *args), script.script


class Batched:
    """One asyncio client's commands from concurrent callers, sent together.

    A redis-py call costs far more CPU alone than as one command of a
    pipeline (docs/performance.md, "Why the code is as it is"). A call here
    joins the client's Outbox and goes out in one pipeline (one round trip)
    with whatever else was queued meanwhile. Each caller gets its own reply or error; a failed link
    fails the calls of its pipeline.
    """

    def __init__(self, client: Any):
        self.client = client
        self.outbox = Outbox(self._send_batch)

    async def call(self, *command: Any) -> Any:
        """One command's reply (parsed as redis-py parses it)."""
        return await self.outbox.put((command, None))

    async def script(self, script: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """A redis-py registered script (`sha`, `script`), run with the others."""
        return await self.outbox.put(_evalsha(script, keys, args))

    async def scripts(self, script: Any, calls: list[tuple[list[Any], list[Any]]]) -> list[Any]:
        """script() for each (keys, args), queued at once: one pipeline."""
        return await self.outbox.put_many([_evalsha(script, keys, args) for keys, args in calls])

    async def _send_batch(self, queued: list[tuple[Any, asyncio.Future]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for (command, _), _ in queued:
            pipe.execute_command(*command)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - every caller of the pipeline raises it
            replies = [exc] * len(queued)
        for ((command, source), future), reply in zip(queued, replies, strict=True):
            if isinstance(reply, NoScriptError) and source is not None:
                try:  # Redis restarted empty: load the script, then send again
                    await self.client.script_load(source)
                    reply = await self.client.execute_command(*command)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the caller raises it
                    reply = exc
            settle(future, reply)


_batched: weakref.WeakKeyDictionary[Any, Batched] = weakref.WeakKeyDictionary()


def batched(client: Any) -> Batched:
    """The client's Batched (one per client, so one outbox per connection pool)."""
    held = _batched.get(client)
    if held is None:
        held = _batched[client] = Batched(client)
    return held
