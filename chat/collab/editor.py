"""
Provides Editor: what an open document needs of a connection editing it
(chat.collab.consumers.DocConsumer).
"""

from typing import Any, Protocol


class Editor(Protocol):
    """A connection editing a document (chat.collab.consumers.DocConsumer)."""

    channel_name: str
    user: Any

    async def send_bytes(self, data: bytes) -> None: ...

    async def renew(self) -> None:
        """Keep the connection's per-user slot (at each refresh)."""
