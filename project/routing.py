"""
Provides the WebSocket routes: /ws/ behind the origin check and authentication.
"""

from channels.routing import URLRouter

from chat.auth import websocket_auth_stack
from chat.routing import websocket_urlpatterns

websocket_application = websocket_auth_stack(URLRouter(websocket_urlpatterns))
