"""
Provides the demo's ASGI application: the contract's §0 snippet, plus
Django's static files handler so `make run` serves the admin's CSS without a
proxy (SERVE_STATIC=0 when one does). A path that would leave the static
directories (`/static/%2e%2e/…`) is 404, as a missing file is, not Django's
500 (its handler lets SuspiciousFileOperation through). And the opt-in a
server process makes: its garbage collector paced (django_realtime.collector).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from chat.routing import websocket_application  # noqa: E402
from django_realtime import collector  # noqa: E402

# A server process: its garbage collector paced (GC_FULL_COLLECTION_SECONDS;
# docs/integration.md, "Performance"), an opt-in the package never makes itself.
collector.install()

http_application = django_asgi_app
if settings.SERVE_STATIC:
    from asgiref.sync import sync_to_async
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
    from django.core.exceptions import SuspiciousOperation
    from django.core.handlers.exception import response_for_exception
    from django.http import Http404

    class StaticFilesHandler(ASGIStaticFilesHandler):
        """Django's, with a path outside the static directories a 404."""

        async def get_response_async(self, request):
            try:
                return await super().get_response_async(request)
            except SuspiciousOperation:
                return await sync_to_async(response_for_exception, thread_sensitive=False)(
                    request, Http404("no such file")
                )

    http_application = StaticFilesHandler(django_asgi_app)

application = ProtocolTypeRouter({"http": http_application, "websocket": websocket_application})
