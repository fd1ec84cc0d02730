"""
Provides the WebSocket application a site puts in its ASGI router:

(docs/architecture.md, "Why the modules are as they are")
"""

import logging
from typing import Any

from channels.routing import URLRouter
from django.urls import path

from django_realtime import internals, servers
from django_realtime.closecodes import CloseCode
from django_realtime.conf import realtime_settings

from .auth import websocket_auth_stack
from .collab.consumers import DocConsumer
from .consumers import RealtimeConsumer


def websocket_urlpatterns() -> list:
    """The WebSocket routes, for a site that builds its own router around them:
    `/ws/` and the shared documents' `/ws/docs/{room}/{name}` (contract §9)."""
    return [
        path(realtime_settings.WS_PATH, RealtimeConsumer.as_asgi()),
        path(f"{realtime_settings.WS_PATH}docs/<str:room>/<str:name>", DocConsumer.as_asgi()),
    ]


logger = logging.getLogger(__name__)


class TryAgainLater:
    """A handshake whose consumer fails before it says anything (the channel
    layer cannot give it a channel: Redis unreachable, its link not yet
    recovered after a partition) is accepted and closed with 1013, which
    clients take as "reconnect after a while", rather than answered 500."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # The package's own connection from here (servers.own): its frames go
        # through this `send`, and any middleware of the site's in it.
        scope = servers.own(scope, send)
        watched = _Watched(send)
        try:
            await self.app(scope, receive, watched.send)
        except Exception:  # noqa: BLE001 - whatever it was, the client retries
            if watched.said:
                raise
            logger.warning("a WebSocket handshake failed; closed with 1013", exc_info=True)
            await send({"type": "websocket.accept"})
            code = CloseCode.TRY_AGAIN
            await send({"type": "websocket.close", "code": int(code), "reason": code.reason})


class _Watched:
    """The `send` given, noting whether anything was sent. It is
    `real_send`, as Channels' SessionMiddleware names the send it wraps, so
    django_realtime.servers.output_of still finds uvicorn's under it."""

    def __init__(self, send: Any):
        self.real_send = send
        self.said = False

    async def send(self, message: Any) -> None:
        self.said = True
        await self.real_send(message)


websocket_application = TryAgainLater(websocket_auth_stack(URLRouter(websocket_urlpatterns())))

internals.require()
servers.prepare()
