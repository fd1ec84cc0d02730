"""
Provides the notifications REST API: thin DRF views over
notifications.selectors and notifications.services. Every query is scoped to
the requesting user; another user's notification is NOT_FOUND. Errors go
through django_realtime.rest.exception_handler, as everywhere under api/.
"""

from urllib.parse import urlencode

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework.request import Request
from rest_framework.response import Response

from django_realtime.errors import BadRequest, NotFound
from django_realtime.rest import RealtimeAPIView, extend_schema, page_params, request_user

from . import events, selectors, services
from .serializers import (
    MarkedSerializer,
    NotificationPageSerializer,
    NotificationSerializer,
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
