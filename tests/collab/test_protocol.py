"""The y-websocket awareness parser refuses what is not an awareness update."""

import pytest

from chat.collab.protocol import AwarenessEntry, ProtocolError, awareness_update, parse_awareness


def test_an_awareness_state_is_parsed_back():
    entry = AwarenessEntry(7, 1, '{"user":{"name":"alice"}}')
    assert parse_awareness(awareness_update([entry])) == [entry]


@pytest.mark.parametrize("state", ["[" * 5000, "{not json", "\udcff"])
def test_an_awareness_state_that_is_not_json_is_a_protocol_error(state):
    """Nested 5,000 deep, malformed or not UTF-8: ProtocolError (the socket
    closes with 4400), never a RecursionError that would end it with 1011."""
    payload = awareness_update([AwarenessEntry(7, 1, "x")])
    raw = state.encode("utf-8", "surrogatepass")
    payload = payload[:3] + bytes([len(raw) & 0x7F | 0x80, len(raw) >> 7]) + raw
    with pytest.raises(ProtocolError):
        parse_awareness(payload)
