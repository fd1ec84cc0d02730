"""
Provides the notifications REST API: thin DRF views over
notifications.selectors and notifications.services. Every query is scoped to
the requesting user; another user's notification is NOT_FOUND. Errors go
through django_realtime.rest.exception_handler, as everywhere under api/.
"""

from pathlib import Path
from urllib.parse import urlencode

from django.http import FileResponse, HttpRequest, HttpResponseBase
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework.request import Request
from rest_framework.response import Response

from django_realtime.errors import BadRequest, NotFound
from django_realtime.rest import (
    RealtimeAPIView,
    body_object,
    extend_schema,
    page_params,
    request_user,
)

from . import digests, events, push, selectors, services
from .serializers import (
    MarkedSerializer,
    NotificationPageSerializer,
    NotificationSerializer,
    PreferencesPatchSerializer,
    PreferencesSerializer,
    PushEndpointSerializer,
    PushKeySerializer,
    PushSubscriptionSerializer,
    UnreadCountSerializer,
)

TRUE, FALSE = {"1", "true", "yes"}, {"0", "false", "no", ""}


class NotificationListView(RealtimeAPIView):
    """The user's notifications, newest first, cursor-paginated by id."""

    @extend_schema(
        parameters=[
            OpenApiParameter("unread", OpenApiTypes.BOOL, description="1: only unread ones"),
            OpenApiParameter("before", OpenApiTypes.INT, description="only id < before"),
            OpenApiParameter("after", OpenApiTypes.INT, description="only id > after; ascending"),
            OpenApiParameter("limit", OpenApiTypes.INT, description="1 to 100, default 50"),
        ],
        responses={200: NotificationPageSerializer},
    )
    def get(self, request: Request) -> Response:
        unread = request.query_params.get("unread", "").lower()
        if unread not in TRUE | FALSE:
            raise BadRequest("'unread' must be 1 or 0")
        before, after, limit = page_params(request)
        rows, more = selectors.notifications_page(
            user=request_user(request),
            unread=unread in TRUE,
            before=before,
            after=after,
            limit=limit,
        )
        ids = [n.pk for n in rows]
        next_url = previous_url = None
        if after is not None:  # ascending: next goes newer, previous older
            if more:
                next_url = self._link(request, after=ids[-1], limit=limit)
            if ids:
                previous_url = self._link(request, before=ids[0], limit=limit)
        else:  # descending: next goes older, previous newer
            if more:
                next_url = self._link(request, before=ids[-1], limit=limit)
            if ids and before is not None:
                previous_url = self._link(request, after=ids[0], limit=limit)
        return Response(
            {
                "results": [events.notification_payload(n) for n in rows],
                "next": next_url,
                "previous": previous_url,
            }
        )

    @staticmethod
    def _link(request: Request, **params: int) -> str:
        if request.query_params.get("unread", "").lower() in TRUE:
            params = {"unread": 1, **params}
        return request.build_absolute_uri(f"{request.path}?{urlencode(params)}")


class UnreadCountView(RealtimeAPIView):
    """How many of the user's notifications are unread (the bell)."""

    @extend_schema(responses={200: UnreadCountSerializer})
    def get(self, request: Request) -> Response:
        return Response({"count": selectors.unread_count(user=request_user(request))})


class MarkReadView(RealtimeAPIView):
    """Mark one notification read; another user's is 404."""

    @extend_schema(request=None, responses={200: NotificationSerializer})
    def post(self, request: Request, pk: str) -> Response:
        if not (pk.isascii() and pk.isdigit()) or len(pk) > 18:  # "¹".isdigit() is True
            raise NotFound("no such notification")
        notification = services.notification_mark_read(
            user=request_user(request), notification_id=int(pk)
        )
        return Response(events.notification_payload(notification))


class MarkAllReadView(RealtimeAPIView):
    """Mark every unread notification of the user read."""

    @extend_schema(request=None, responses={200: MarkedSerializer})
    def post(self, request: Request) -> Response:
        return Response(
            {"marked": services.notifications_mark_all_read(user=request_user(request))}
        )


class PreferencesView(RealtimeAPIView):
    """The user's offline channels: Web Push and the e-mail digest, each on or off."""

    @extend_schema(responses={200: PreferencesSerializer})
    def get(self, request: Request) -> Response:
        return Response(services.preferences(user=request_user(request)))

    @extend_schema(request=PreferencesPatchSerializer, responses={200: PreferencesSerializer})
    def patch(self, request: Request) -> Response:
        return Response(
            services.preferences_update(user=request_user(request), changes=body_object(request))
        )


class PushKeyView(RealtimeAPIView):
    """The application server key to subscribe with; 404 when the site has no push."""

    @extend_schema(responses={200: PushKeySerializer})
    def get(self, request: Request) -> Response:
        request_user(request)
        if not push.enabled():
            raise NotFound("Web Push is not configured on this site")
        return Response({"public_key": push.public_key()})


class PushSubscriptionsView(RealtimeAPIView):
    """A browser's push subscription for the user: POST stores it, DELETE removes it."""

    @extend_schema(request=PushSubscriptionSerializer, responses={201: PushEndpointSerializer})
    def post(self, request: Request) -> Response:
        if not push.enabled():
            raise NotFound("Web Push is not configured on this site")
        subscription = push.subscribe(user=request_user(request), body=body_object(request))
        return Response({"endpoint": subscription.endpoint}, status=201)

    @extend_schema(request=PushEndpointSerializer, responses={204: None})
    def delete(self, request: Request) -> Response:
        push.unsubscribe(user=request_user(request), body=body_object(request))
        return Response(status=204)


@csrf_exempt  # RFC 8058: a mail client's one-click POST carries no token; the link is the key
@require_http_methods(["GET", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponseBase:
    """The digest's signed unsubscribe link, without logging in: GET asks,
    POST (the page's button, or a mail client's RFC 8058 one-click) turns
    e-mail off for the link's user only."""
    valid = digests.unsubscribe_user_id(token) is not None
    done = False
    if valid and request.method == "POST":
        done = valid = digests.unsubscribe(token)
    response = render(
        request,
        "notifications/unsubscribe.html",
        {"done": done, "invalid": not valid, "site_url": digests.site_url() + "/"},
        status=200 if valid else 400,
    )
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer"
    return response


SERVICE_WORKER = Path(__file__).resolve().parents[1] / "chat" / "static" / "realtime" / "push-sw.js"


@require_GET
def service_worker(request: HttpRequest) -> HttpResponseBase:
    """The push service worker (chat/static/realtime/push-sw.js), served under
    the package's prefix so that its scope covers the package's pages;
    `Service-Worker-Allowed: /` lets a site register it for its whole origin."""
    response = FileResponse(open(SERVICE_WORKER, "rb"), content_type="text/javascript")
    response["Service-Worker-Allowed"] = "/"
    response["Cache-Control"] = "no-cache"
    response["X-Content-Type-Options"] = "nosniff"
    return response
