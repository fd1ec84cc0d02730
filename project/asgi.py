"""
Provides the demo's ASGI application: the contract's §0 snippet, plus
Django's static files handler so `make run` serves the admin's CSS without a
proxy (SERVE_STATIC=0 when one does).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from chat.routing import websocket_application  # noqa: E402

http_application = django_asgi_app
if settings.SERVE_STATIC:
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    http_application = ASGIStaticFilesHandler(django_asgi_app)

application = ProtocolTypeRouter({"http": http_application, "websocket": websocket_application})
