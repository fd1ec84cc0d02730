"""
Provides the WebSocket application a site puts in its ASGI router:

    ProtocolTypeRouter({"http": django_asgi_app, "websocket": websocket_application})

`/ws/` (REALTIME["WS_PATH"]) and `/ws/docs/{room}/{name}` (shared documents,
chat.collab) behind the origin check and authentication.
Importing it checks the other libraries' internals the package relies on
(django_realtime.internals: it refuses to start, naming them, if any went)
and prepares the server it runs under (django_realtime.servers): under
daphne, close codes and reasons, handshake timeouts and the 1012 drain.
"""

from channels.routing import URLRouter
from django.urls import path

from django_realtime import internals, servers
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


websocket_application = websocket_auth_stack(URLRouter(websocket_urlpatterns()))

internals.require()
servers.prepare()
