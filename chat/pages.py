"""
Provides the web pages: the room list and a room, their assets and the API's
browsable docs. The live parts run in the browser on static/realtime/*.js;
these views only render the first paint and tell the scripts where the
server's parts are (the `rt-config` JSON script), so the pages work under
whatever prefix the site includes chat.urls at.
"""

from pathlib import Path

import drf_spectacular_sidecar
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.validators import slug_re
from django.http import Http404, HttpRequest, HttpResponseBase
from django.shortcuts import render, resolve_url
from django.urls import NoReverseMatch, reverse
from django.views.decorators.http import require_GET
from django.views.static import serve

from django_realtime.conf import realtime_settings
from django_realtime.errors import ClientError
from django_realtime.payloads import user_payload
from django_realtime.rest import request_user
from django_realtime.security import add_headers, policy

from . import events, selectors

ASSETS = Path(__file__).resolve().parent / "static" / "realtime"


def client_config() -> dict:
    """What the scripts need to find the API, the streams and the WebSocket."""
    prefix = reverse("chat:index").rstrip("/")
    try:
        notifications = reverse("notifications:api-notifications")
    except NoReverseMatch:  # the site did not include notifications.urls
        notifications = None
    return {
        "prefix": prefix,
        "notifications": notifications,
        "ws": "/" + realtime_settings.WS_PATH.lstrip("/"),
        "login": resolve_url(settings.LOGIN_URL),
    }


def _render(
    request: HttpRequest, template: str, context: dict, status: int = 200, csp: str = ""
) -> HttpResponseBase:
    """The page, with the security headers (django_realtime.security); `csp`
    replaces the default policy."""
    context = {
        **context,
        "rt_config": client_config(),
        "base_template": realtime_settings.BASE_TEMPLATE,
    }
    response = render(request, template, context, status=status)
    if csp:
        response["Content-Security-Policy"] = csp
    return add_headers(response)


# Rooms on one page of the index (and rooms with unread messages above
# them): the page stays small however many rooms the site has.
INDEX_ROOMS = 50


@login_required
def index(request: HttpRequest) -> HttpResponseBase:
    """The rooms a page at a time, by slug from `?after=`, and the first
    INDEX_ROOMS of the user's rooms with unread messages above them."""
    user = request_user(request)
    after = request.GET.get("after", "")
    if len(after) > 64 or not slug_re.match(after):
        after = ""
    rooms = selectors.rooms_visible(user=user)
    page = list((rooms.filter(slug__gt=after) if after else rooms)[: INDEX_ROOMS + 1])
    more = len(page) > INDEX_ROOMS
    page = page[:INDEX_ROOMS]
    # `unread_count` is rooms_visible's annotation, which django-stubs cannot see.
    unread = [] if after else list(rooms.filter(unread_count__gt=0)[:INDEX_ROOMS])  # type: ignore[misc]
    context = {
        "rooms": page,
        "unread_rooms": unread,
        "after": after,
        "next_after": page[-1].slug if more else "",
        "page_size": INDEX_ROOMS,
    }
    return _render(request, "chat/index.html", context)


@login_required
def room(request: HttpRequest, slug: str) -> HttpResponseBase:
    try:
        access = selectors.room_access_by_slug(user=request_user(request), slug=slug)
    except ClientError as exc:
        return _render(request, "chat/error.html", {"message": exc.message}, status=exc.status)
    rows, _ = selectors.messages_page(room=access.room, limit=50)
    history = [events.message_payload(m, access.room.slug) for m in reversed(rows)]
    return _render(
        request,
        "chat/room.html",
        {
            "room": access.room,
            "history": history,
            "me": user_payload(request_user(request)),
            "can_post": access.can_post,
        },
    )


@require_GET
def asset(request: HttpRequest, name: str) -> HttpResponseBase:
    """The pages' own scripts, styles and icon, served wherever the site
    mounts chat.urls (a proxy or collectstatic may serve them instead)."""
    if name.startswith(("tests/", ".")) or "/." in name:
        raise Http404("no such asset")
    response = serve(request, name, document_root=str(ASSETS))
    response["Cache-Control"] = "no-cache"  # revalidated by Last-Modified
    response["X-Content-Type-Options"] = "nosniff"
    return response


SWAGGER_UI = "drf_spectacular_sidecar/swagger-ui-dist"


@require_GET
def api_docs(request: HttpRequest) -> HttpResponseBase:
    """Swagger UI over the package's schema, from drf-spectacular-sidecar's
    files (no CDN), served through `docs_asset`."""
    return _render(
        request,
        "chat/api_docs.html",
        {"schema_url": reverse("chat:api-schema")},
        csp=policy(inline_styles=True),
    )


@require_GET
def docs_asset(request: HttpRequest, name: str) -> HttpResponseBase:
    """swagger-ui's own files, from the installed drf-spectacular-sidecar."""
    root = Path(drf_spectacular_sidecar.__file__).resolve().parent / "static" / SWAGGER_UI
    if name not in DOCS_ASSETS:
        raise Http404("no such asset")
    response = serve(request, name, document_root=str(root))
    response["Cache-Control"] = "public, max-age=86400"
    return response


DOCS_ASSETS = frozenset(
    {
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-ui-standalone-preset.js",
        "favicon-32x32.png",
    }
)
