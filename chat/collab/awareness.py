"""
Provides DocumentAwareness, who is where in an open document (y-websocket
awareness): relayed between the process's editors and across processes,
never stored; an editor speaks only for its own clients. How:
docs/architecture.md, "chat.collab.hub".
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

from django_realtime.conf import realtime_settings

from . import events, protocol
from .editor import Editor
from .protocol import AwarenessEntry

# This process, in awareness relays: a process skips its own.
PROCESS = uuid.uuid4().hex
# Client ids one connection may speak for in awareness: a stock client has
# one (Yjs picks a new one only when it meets its own id in a remote update).
MAX_CLIENTS_PER_EDITOR = 4


@dataclass
class Aware:
    """One client's awareness as last seen: by whom, from which of this
    process's connections (None: another process's), and when."""

    entry: AwarenessEntry
    user_id: int
    channel: str | None
    seen: float


class DocumentAwareness:
    """A mixin for LiveDocument: everyone's awareness of the document."""

    document_id: int
    editors: dict[str, Editor]
    awareness: dict[int, Aware]

    def awareness_all(self) -> bytes:
        return protocol.awareness_message([a.entry for a in self.awareness.values()])

    async def aware(self, editor: Editor, payload: bytes) -> None:
        """An editor's awareness update: its own entries kept, relayed here
        and to the other processes; entries under ids it does not hold are
        dropped."""
        entries = self._own(protocol.parse_awareness(payload), editor)
        if not entries:
            return
        self._note(entries, user_id=editor.user.pk, channel=editor.channel_name)
        await self._to_editors(protocol.awareness_message(entries), skip=editor.channel_name)
        await events.broadcast_awareness(
            document_id=self.document_id,
            payload=protocol.awareness_update(entries),
            process=PROCESS,
            user_id=editor.user.pk,
        )

    def _own(self, entries: list[AwarenessEntry], editor: Editor) -> list[AwarenessEntry]:
        """The entries `editor` may speak for: ids it holds, ids its user
        holds on another process (a client that reconnected here), and new
        ids up to MAX_CLIENTS_PER_EDITOR."""
        channel, user_id = editor.channel_name, editor.user.pk
        held = {cid for cid, a in self.awareness.items() if a.channel == channel}
        mine: list[AwarenessEntry] = []
        for entry in entries:
            known = self.awareness.get(entry.client_id)
            if known is None:
                if entry.state == "null" or len(held) >= MAX_CLIENTS_PER_EDITOR:
                    continue
                held.add(entry.client_id)
            elif known.channel != channel and not (
                known.channel is None and known.user_id == user_id
            ):
                continue  # another editor's client
            mine.append(entry)
        return mine

    def _note(self, entries: list[AwarenessEntry], *, user_id: int, channel: str | None) -> None:
        now = asyncio.get_running_loop().time()
        for entry in entries:
            if entry.state == "null":
                self.awareness.pop(entry.client_id, None)
            else:
                self.awareness[entry.client_id] = Aware(entry, user_id, channel, now)

    def _theirs(self, entries: list[AwarenessEntry], *, user_id: int) -> list[AwarenessEntry]:
        """The entries another process relayed for `user_id` that are theirs:
        none held by an editor here or by another user."""
        return [
            entry
            for entry in entries
            if (known := self.awareness.get(entry.client_id)) is None
            or (known.channel is None and known.user_id == user_id)
        ]

    async def _remove_awareness(self, gone: list[Aware], *, relay: bool) -> None:
        removal = [AwarenessEntry(a.entry.client_id, a.entry.clock + 1, "null") for a in gone]
        for aware in gone:
            self.awareness.pop(aware.entry.client_id, None)
        await self._to_editors(protocol.awareness_message(removal))
        if relay:
            await events.broadcast_awareness(
                document_id=self.document_id,
                payload=protocol.awareness_update(removal),
                process=PROCESS,
                user_id=gone[0].user_id,
            )

    async def _to_editors(self, message: bytes, *, skip: str | None = None) -> None:
        for channel, editor in list(self.editors.items()):
            if channel != skip:
                await editor.send_bytes(message)

    async def _relayed(self, event: dict) -> None:
        """Another process's editors' awareness, relayed on the document's group."""
        if event.get("process") == PROCESS:
            return
        payload = events.decode(event["awareness"])
        user_id = int(event["user_id"])
        entries = self._theirs(protocol.parse_awareness(payload), user_id=user_id)
        if entries:
            self._note(entries, user_id=user_id, channel=None)
            await self._to_editors(protocol.awareness_message(entries))

    async def _left_room(self, event: dict) -> None:
        """Presence's diff of the room: who left it leaves the awareness
        (another process's clients; this process's leave with their connection)."""
        left = {leave["user"]["id"] for leave in event["payload"].get("leaves", [])}
        gone = [a for a in self.awareness.values() if a.channel is None and a.user_id in left]
        if gone:
            await self._remove_awareness(gone, relay=False)

    async def _expire_awareness(self, now: float) -> None:
        """Another process's clients nobody renewed for DOCS_AWARENESS_TIMEOUT_SECONDS leave."""
        timeout = realtime_settings.DOCS_AWARENESS_TIMEOUT_SECONDS
        stale = [a for a in self.awareness.values() if a.channel is None and now - a.seen > timeout]
        if stale:
            await self._remove_awareness(stale, relay=False)
