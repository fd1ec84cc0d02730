"""
Provides the ASGI application: Django for HTTP (static files too, unless a
proxy serves them), Channels for WebSocket.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from project.daphne_transport import tune_daphne  # noqa: E402
from project.drain import install_daphne_drain  # noqa: E402
from project.routing import websocket_application  # noqa: E402

tune_daphne()
install_daphne_drain()

http_application = django_asgi_app
if settings.SERVE_STATIC:
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    http_application = ASGIStaticFilesHandler(django_asgi_app)

application = ProtocolTypeRouter({"http": http_application, "websocket": websocket_application})
