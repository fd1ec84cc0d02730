"""
Provides the y-websocket wire format: what a stock `y-websocket` client sends
and expects, read and written with pycrdt's own sync helpers.

A message is a var-uint type, then: for SYNC (0) a var-uint sync type (step 1,
step 2, update) and a var-length payload; for AWARENESS (1) a var-length
awareness update; QUERY_AWARENESS (3) carries nothing. An awareness update is
a var-uint count of entries, each `client id, clock, state` (var-uint,
var-uint, var-string JSON; "null" for a client that left).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pycrdt import (
    Decoder,
    Encoder,
    YMessageType,
    YSyncMessageType,
    create_awareness_message,
    create_update_message,
    write_message,
)

SYNC = int(YMessageType.SYNC)
AWARENESS = int(YMessageType.AWARENESS)
AUTH = 2
QUERY_AWARENESS = 3

SYNC_STEP1 = int(YSyncMessageType.SYNC_STEP1)
SYNC_STEP2 = int(YSyncMessageType.SYNC_STEP2)
SYNC_UPDATE = int(YSyncMessageType.SYNC_UPDATE)

# What Yjs encodes for an update that changes nothing.
EMPTY_UPDATE = b"\x00\x00"

__all__ = [
    "AWARENESS",
    "EMPTY_UPDATE",
    "QUERY_AWARENESS",
    "SYNC",
    "AwarenessEntry",
    "Message",
    "ProtocolError",
    "awareness_message",
    "parse",
    "parse_awareness",
    "step1_message",
    "step2_message",
    "update_message",
]


class ProtocolError(ValueError):
    """Not a y-websocket message."""


@dataclass(frozen=True)
class Message:
    kind: int  # SYNC, AWARENESS, QUERY_AWARENESS (AUTH is refused)
    sync_type: int | None  # SYNC_STEP1 / SYNC_STEP2 / SYNC_UPDATE for SYNC
    payload: bytes  # the state vector, the update or the awareness update


@dataclass(frozen=True)
class AwarenessEntry:
    client_id: int
    clock: int
    state: str  # JSON text; "null" when the client left


# Var-uints beyond 53 bits are not numbers a JavaScript client could have sent.
_MAX_UINT = 2**53


def _uint(decoder: Decoder) -> int:
    try:
        value = decoder.read_var_uint()
    except (IndexError, RuntimeError):
        raise ProtocolError("truncated message") from None
    if value > _MAX_UINT:
        raise ProtocolError("number out of range")
    return value


def _bytes(decoder: Decoder) -> bytes:
    length = _uint(decoder)
    if length > decoder.length:
        raise ProtocolError("truncated message")
    start = decoder.i0
    decoder.i0 += length
    decoder.length -= length
    return bytes(decoder.stream[start : start + length])


def parse(data: bytes) -> Message:
    """One client message; ProtocolError for anything else."""
    decoder = Decoder(data)
    kind = _uint(decoder)
    if kind == SYNC:
        sync_type = _uint(decoder)
        if sync_type not in (SYNC_STEP1, SYNC_STEP2, SYNC_UPDATE):
            raise ProtocolError(f"unknown sync message {sync_type}")
        return Message(SYNC, sync_type, _bytes(decoder))
    if kind == AWARENESS:
        return Message(AWARENESS, None, _bytes(decoder))
    if kind == QUERY_AWARENESS:
        return Message(QUERY_AWARENESS, None, b"")
    raise ProtocolError(f"unsupported message type {kind}")


def parse_awareness(payload: bytes) -> list[AwarenessEntry]:
    """The entries of an awareness update; ProtocolError if malformed."""
    decoder = Decoder(payload)
    entries = []
    for _ in range(_uint(decoder)):
        client_id, clock = _uint(decoder), _uint(decoder)
        try:
            state = _bytes(decoder).decode("utf-8")
            json.loads(state)
        except (ValueError, RecursionError):  # UnicodeDecodeError, JSONDecodeError; nesting
            raise ProtocolError("awareness state is not JSON") from None
        entries.append(AwarenessEntry(client_id, clock, state))
    return entries


def awareness_update(entries: list[AwarenessEntry]) -> bytes:
    encoder = Encoder()
    encoder.write_var_uint(len(entries))
    for entry in entries:
        encoder.write_var_uint(entry.client_id)
        encoder.write_var_uint(entry.clock)
        # write_var_string counts characters; the protocol counts bytes.
        encoder.stream.append(write_message(entry.state.encode("utf-8")))
    return encoder.to_bytes()


def awareness_message(entries: list[AwarenessEntry]) -> bytes:
    """An AWARENESS message carrying `entries`."""
    return create_awareness_message(awareness_update(entries))


def step1_message(state_vector: bytes) -> bytes:
    return bytes([SYNC, SYNC_STEP1]) + write_message(state_vector)


def step2_message(update: bytes) -> bytes:
    return bytes([SYNC, SYNC_STEP2]) + write_message(update)


def update_message(update: bytes) -> bytes:
    return create_update_message(update)
