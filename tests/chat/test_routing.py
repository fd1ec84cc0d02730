"""The WebSocket application's outer guard (chat.routing.TryAgainLater)."""

import pytest

from chat.routing import TryAgainLater
from django_realtime.closecodes import CloseCode


async def run(app) -> list[dict]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "websocket.connect"}

    async def send(message: dict) -> None:
        sent.append(message)

    await TryAgainLater(app)({"type": "websocket", "path": "/ws/"}, receive, send)
    return sent


async def test_a_handshake_that_fails_before_the_consumer_speaks_is_closed_with_1013():
    """Redis unreachable when the consumer asks for its channel: the client
    is told to try again later, not answered 500."""

    async def no_channel(scope, receive, send):
        raise ConnectionError("Redis is unreachable")

    assert await run(no_channel) == [
        {"type": "websocket.accept"},
        {"type": "websocket.close", "code": CloseCode.TRY_AGAIN, "reason": "try again later"},
    ]


async def test_a_failure_after_the_consumer_spoke_is_left_to_the_server():
    async def accepted_then_failed(scope, receive, send):
        await send({"type": "websocket.accept"})
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError):
        await run(accepted_then_failed)
