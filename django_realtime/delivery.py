"""
Provides ordered delivery: `SeqCursor`, what one receiver has been sent of
one gap-free sequence (a room's message seqs), used alike by a WebSocket
connection for each room it joined and by an SSE stream.

(docs/architecture.md, "Why the modules are as they are")
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from . import metrics
from .errors import Unavailable

Frame = dict[str, Any]


@dataclass(frozen=True)
class Entry:
    """One seq of the sequence; `frame` None for a seq with nothing to show
    (a deleted message), which the cursor moves past."""

    seq: int
    frame: Frame | None


# (after, until) -> the entries with after < seq <= until, ascending (at most
# the newest N of them: older ones are skipped, as a truncated resume is).
# Raises Unavailable when the database is away.
Fetch = Callable[[int, int], Awaitable[list[Entry]]]


class SeqCursor:
    """What one receiver has been sent of one sequence."""

    def __init__(self, *, fetch: Fetch, delivered: int = 0):
        self.fetch = fetch
        self.delivered = delivered

    def start(self, *, since: int | None, last: int) -> None:
        """Position a new receiver: at the end (`since` None), or at `since`
        to replay what came after it. A `since` beyond the end (a client that
        outlived a database restore) resumes from the end rather than
        skipping future entries."""
        self.delivered = last if since is None else min(since, last)

    def take(self, entries: list[Entry]) -> list[Frame]:
        """The frames of `entries` (ascending) not sent yet; the cursor moves past them all."""
        frames = []
        for entry in entries:
            if entry.seq > self.delivered:
                if entry.frame is not None:
                    frames.append(entry.frame)
                self.delivered = entry.seq
        return frames

    def is_sent(self, seq: int) -> bool:
        return seq <= self.delivered

    def sent(self, seq: int) -> None:
        """The caller sent the next entry itself (the fan-out's fast path)."""
        self.delivered = seq

    async def offer(self, seq: int, frame: Frame) -> list[Frame]:
        """The frames to send, in order, for a doorbell carrying `frame` at
        `seq`: none if sent already, the gap's first if it is ahead of one,
        none if that gap cannot be read now (the next catch_up sends it)."""
        if seq <= self.delivered:
            return []
        frames: list[Frame] = []
        if seq > self.delivered + 1:
            frames = await self.catch_up(seq - 1)
            if self.delivered < seq - 1:
                return frames  # the database is away: hold this one back too
        self.delivered = seq
        return [*frames, frame]

    async def catch_up(self, last: int) -> list[Frame]:
        """Everything after the cursor up to `last`, from the database ([]
        when it is away: the caller tries again at its next refresh)."""
        if last <= self.delivered:
            return []
        try:
            entries = await self.fetch(self.delivered, last)
        except Unavailable:
            return []
        frames = self.take(entries)
        metrics.GAP_FILLS.inc(len(frames))
        return frames
