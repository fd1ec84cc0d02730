"""
Provides PerUserSlots: how many connections (or streams) each user has open
in this process, for the per-user caps of the WebSocket
(WS_MAX_CONNECTIONS_PER_USER) and SSE (SSE_MAX_STREAMS_PER_USER).
"""

from collections import Counter


class PerUserSlots:
    """Open slots per user; a user with none left holds no entry."""

    def __init__(self) -> None:
        self._open: Counter[int] = Counter()

    def full(self, user_id: int, cap: int) -> bool:
        """Whether the user holds `cap` slots already (a cap of 0 is no cap)."""
        return bool(cap) and self._open[user_id] >= cap

    def acquire(self, user_id: int) -> None:
        self._open[user_id] += 1

    def release(self, user_id: int) -> None:
        self._open[user_id] -= 1
        if self._open[user_id] <= 0:
            del self._open[user_id]

    def held(self, user_id: int) -> int:
        return self._open.get(user_id, 0)
