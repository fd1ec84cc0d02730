"""
A site with WebSocket consumers and HTTP views of its own, and the package
routed beside them, as contract §0 ("a guest in the site") pictures it and
docs/integration.md shows:

- `/guest/stream/`: the site's own consumer, which sends STREAM_FRAMES text
  frames of STREAM_FRAME_CHARS characters at once when a client connects
  (daphne's send never waits: they pile up in Twisted's buffer);
- `/ws/…`: the package's websocket_application;
- both behind the site's own ASGI middleware (Counted), which wraps `send`
  and counts the `websocket.send` messages of each connection by the `tag`
  of its query string; `/guest/sent/?tag=…` answers the count;
- `/guest/big/`: the site's own streaming HTTP response, BIG_CHUNKS chunks;
- `/guest/server/`: what this process's daphne, autobahn, Twisted and
  garbage collector look like after the routing was imported.

It does not opt in to the package's garbage-collection pacing.
"""

import gc
import json
import os
from urllib.parse import parse_qs

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_asgi_app = get_asgi_application()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path, re_path  # noqa: E402

GC_AT_START = {"threshold": gc.get_threshold(), "freeze_count": gc.get_freeze_count()}

from chat.routing import websocket_application  # noqa: E402
from django_realtime import collector  # noqa: E402
from tests.guest_site import BIG_CHUNKS, STREAM_FRAMES, big_chunk, stream_frame  # noqa: E402


class StreamConsumer(AsyncWebsocketConsumer):
    """The site's own: everything at once, then nothing (the client closes)."""

    async def connect(self) -> None:
        await self.accept()
        for n in range(STREAM_FRAMES):
            await self.send(text_data=stream_frame(n))


SENT: dict[str, int] = {}


class Counted:
    """The site's ASGI middleware: counts each connection's frames."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        tag = query.get("tag", [""])[0]

        async def counted_send(message):
            if message["type"] == "websocket.send":
                SENT[tag] = SENT.get(tag, 0) + 1
            await send(message)

        await self.app(scope, receive, counted_send)


async def respond(send, body: bytes, content_type: bytes = b"application/json") -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type)]}
    )
    await send({"type": "http.response.body", "body": body})


def server_state() -> dict:
    from autobahn.websocket import protocol as autobahn_protocol
    from daphne import server as daphne_server
    from daphne import ws_protocol
    from twisted.internet import _newtls, tcp

    return {
        "tcp_write_stock": tcp.Server.write is _newtls.ConnectionMixin.write,
        "handle_reply_stock": ws_protocol.WebSocketProtocol.handle_reply.__module__
        == "daphne.ws_protocol",
        "server_close_stock": ws_protocol.WebSocketProtocol.serverClose.__module__
        == "daphne.ws_protocol",
        "factory_stock": daphne_server.WebSocketFactory is ws_protocol.WebSocketFactory,
        "autobahn_timings_str": isinstance(str(autobahn_protocol.Timings()), str),
        "gc_at_start": GC_AT_START,
        "gc_now": {"threshold": gc.get_threshold(), "freeze_count": gc.get_freeze_count()},
        "paced": collector.installed(),
    }


async def http(scope, receive, send):
    if scope["path"] == "/guest/sent/":
        tag = parse_qs(scope["query_string"].decode()).get("tag", [""])[0]
        await respond(send, json.dumps({"sent": SENT.get(tag, 0)}).encode())
    elif scope["path"] == "/guest/server/":
        await respond(send, json.dumps(server_state()).encode())
    elif scope["path"] == "/guest/big/":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")],
            }
        )
        for n in range(BIG_CHUNKS):
            await send({"type": "http.response.body", "body": big_chunk(n), "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    else:
        await django_asgi_app(scope, receive, send)


application = ProtocolTypeRouter(
    {
        "http": http,
        "websocket": Counted(
            URLRouter(
                [
                    path("guest/stream/", StreamConsumer.as_asgi()),
                    re_path(r"", websocket_application),  # the rest: /ws/, /ws/docs/…
                ]
            )
        ),
    }
)
