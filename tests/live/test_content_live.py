"""Message text over real sockets: what is sent is what every reader gets, byte
for byte, on the WebSocket and in REST history (escaping is the pages' job;
tests/chat/test_security.py checks them)."""

import pytest
from asgiref.sync import sync_to_async

from chat.models import Room

from ..chat.test_security import HOSTILE
from .conftest import Ws

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]


async def test_hostile_text_round_trips_exactly_through_the_websocket_and_rest(
    unlimited_server, make_user, token_for, http
):
    alice, bob = await _users(make_user, token_for)
    await Room.objects.acreate(slug="general", name="General")
    a = await Ws.connect(unlimited_server.ws, token=alice)
    b = await Ws.connect(unlimited_server.ws, token=bob)
    await b.join("general")
    for content in HOSTILE:
        ack = await a.post("general", content)
        assert ack["type"] == "ack", (content, ack)
    received = [m["content"] for m in await b.messages("general", len(HOSTILE))]
    assert received == HOSTILE
    with http(unlimited_server, bob) as client:
        history = client.get("/api/rooms/general/messages/?after=0&limit=100").json()["results"]
    assert [m["content"] for m in history] == HOSTILE
    await a.close()
    await b.close()


async def _users(make_user, token_for):
    return [
        await sync_to_async(token_for)(await sync_to_async(make_user)(name))
        for name in ("alice", "bob")
    ]
