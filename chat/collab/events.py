"""
Provides the shared documents' layer events, sent through django_realtime.bus
(the one door to the channel layer): the doorbell of a stored update and the
relay of awareness between processes.

The layer is a doorbell: one event per stored batch carries its seqs (and
the updates themselves when small), and a process that misses one reads the gap from the
database, whose sequence is the truth.
"""

import base64
from typing import Any

from django_realtime import bus

# Layer event types, in their own namespace ("doc.*").
UPDATE = "doc.update"
AWARENESS = "doc.awareness"

# An update larger than this rings without itself: receivers read it from the
# database (layer messages stay small; most keystrokes are ~20-50 bytes).
INLINE_MAX_BYTES = 16384


def doc_group(document_id: int) -> str:
    """The layer group of a document's receivers (one per process that has it open)."""
    return f"chat.doc.{document_id}"


def encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def broadcast_updates(*, document_id: int, updates: list[tuple[int, bytes, str]]) -> None:
    """Stored updates (called on commit), as (seq, update, origin) with
    contiguous seqs: ONE doorbell for all of them. `origin` names the
    connection that sent each, which is not sent its own update back. Past
    INLINE_MAX_BYTES together, the doorbell carries only the seqs."""
    event: dict[str, Any] = {
        "type": UPDATE,
        "document_id": document_id,
        "seq": updates[0][0],
        "last": updates[-1][0],
    }
    if sum(len(data) for _, data, _ in updates) <= INLINE_MAX_BYTES:
        event["updates"] = [encode(data) for _, data, _ in updates]
        event["origins"] = [origin for _, _, origin in updates]
    bus.send_sync(doc_group(document_id), event)


async def broadcast_awareness(
    *, document_id: int, payload: bytes, process: str, user_id: int
) -> None:
    """An editor's awareness update, for the editors in the other processes."""
    event = {
        "type": AWARENESS,
        "document_id": document_id,
        "awareness": encode(payload),
        "process": process,
        "user_id": user_id,
    }
    await bus.send(doc_group(document_id), event)
