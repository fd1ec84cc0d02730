"""
Provides the chat REST API: thin DRF views over chat.selectors and
chat.services, each a RealtimeAPIView (its own authentication, permissions,
throttles and error handling, whatever the site's DRF defaults), and the
OpenAPI schema of the package's API.
"""

import uuid
from typing import Any
from urllib.parse import urlencode

from asgiref.sync import async_to_sync
from django.contrib.auth import authenticate
from django.core.validators import slug_re
from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from drf_spectacular.views import SpectacularAPIView
from rest_framework import status
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from django_realtime import __version__
from django_realtime.credentials import credential_of
from django_realtime.errors import BadRequest
from django_realtime.payloads import user_payload
from django_realtime.rest import (
    DEFAULT_PAGE,
    MAX_PAGE,
    LoginThrottle,
    RealtimeAPIView,
    body_object,
    extend_schema,
    int_param,
    page_params,
    request_user,
)
from presence import tracking

from . import auth, events, selectors, services
from .serializers import (
    CredentialsSerializer,
    InviteSerializer,
    MemberSerializer,
    MessageCreateSerializer,
    MessagePageSerializer,
    MessageSerializer,
    PresenceSerializer,
    ReadPositionSerializer,
    ReadSerializer,
    ReceiptSerializer,
    RoomPageSerializer,
    RoomSerializer,
    TicketSerializer,
    TokenSerializer,
)


class TokenView(RealtimeAPIView):
    """Exchange a username and password for an API token."""

    authentication_classes: list = []
    permission_classes: list = []
    throttle_classes = [LoginThrottle]

    @extend_schema(request=CredentialsSerializer, responses={200: TokenSerializer})
    def post(self, request: Request) -> Response:
        body = body_object(request)
        username, password = body.get("username"), body.get("password")
        if not isinstance(username, str) or not isinstance(password, str):
            raise ValidationError({"detail": "username and password are required"})
        user = authenticate(request._request, username=username, password=password)
        if user is None:
            raise ValidationError({"detail": "unable to log in with those credentials"})
        token, _ = Token.objects.get_or_create(user=user)
        return Response({"token": token.key})


class TicketView(RealtimeAPIView):
    """A single-use ticket for /ws/?ticket=…, valid 30 s."""

    @extend_schema(request=None, responses={200: TicketSerializer})
    def post(self, request: Request) -> Response:
        return Response(
            {
                "ticket": auth.ticket_issue(
                    user=request_user(request), credential=credential_of(request)
                )
            }
        )


def slug_param(request: Request, name: str) -> str | None:
    """A slug cursor (`after`, `before`) of a list ordered by slug or name."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) > 64 or not slug_re.match(raw):
        raise BadRequest(f"'{name}' must be a slug")
    return raw


def slug_page(request: Request, rows: QuerySet, field: str) -> tuple[list, str | None, str | None]:
    """One page of `rows` (ordered by the unique `field`, a slug) after or
    before the `after`/`before` cursor, `limit` at a time (1 to 100, default
    50): the rows, in order, and the links to the next and previous pages."""
    after, before = slug_param(request, "after"), slug_param(request, "before")
    limit = int_param(request, "limit", DEFAULT_PAGE) or 0
    if limit < 1:
        raise BadRequest("'limit' must be at least 1")
    limit = min(limit, MAX_PAGE)
    if before is not None:
        page = list(rows.filter(**{f"{field}__lt": before}).order_by(f"-{field}")[: limit + 1])
        more_before, page = len(page) > limit, page[:limit][::-1]
        more_after = True
    else:
        if after is not None:
            rows = rows.filter(**{f"{field}__gt": after})
        page = list(rows.order_by(field)[: limit + 1])
        more_after, page = len(page) > limit, page[:limit]
        more_before = after is not None
    keys = [getattr(row, field) for row in page]

    def link(**params: Any) -> str:
        return request.build_absolute_uri(f"{request.path}?{urlencode({**params, 'limit': limit})}")

    next_url = link(after=keys[-1]) if keys and more_after else None
    previous_url = link(before=keys[0]) if keys and more_before else None
    return page, next_url, previous_url


class RoomListView(RealtimeAPIView):
    """Rooms the user can see, with unread counts, by slug a page at a time;
    create a room (CHAT_ROOM_CREATE_RATE per user)."""

    @extend_schema(
        parameters=[
            OpenApiParameter("after", OpenApiTypes.STR, description="only slugs after this one"),
            OpenApiParameter("before", OpenApiTypes.STR, description="only slugs before this one"),
            OpenApiParameter("limit", OpenApiTypes.INT, description="1 to 100, default 50"),
        ],
        responses={200: RoomPageSerializer},
    )
    def get(self, request: Request) -> Response:
        rooms = selectors.rooms_visible(user=request_user(request))
        page, next_url, previous_url = slug_page(request, rooms, "slug")
        return Response(
            {"results": [_room_data(r) for r in page], "next": next_url, "previous": previous_url}
        )

    @extend_schema(request=RoomSerializer, responses={201: RoomSerializer})
    def post(self, request: Request) -> Response:
        body = body_object(request)
        room = services.room_create(
            user=request_user(request),
            slug=body.get("slug"),
            name=body.get("name"),
            is_private=body.get("is_private", False) is True,
        )
        data = {"slug": room.slug, "name": room.name, "is_private": room.is_private}
        data.update(last_seq=0, unread_count=0, last_read_seq=0)
        return Response(data, status=status.HTTP_201_CREATED)


def _room_data(room: Any) -> dict:
    return {
        "slug": room.slug,
        "name": room.name,
        "is_private": room.is_private,
        "last_seq": room.last_seq,
        "unread_count": room.unread_count,
        "last_read_seq": room.last_read_seq,
    }


class MemberView(RealtimeAPIView):
    """Invite a user to a room (members of the room, or staff)."""

    @extend_schema(request=InviteSerializer, responses={201: MemberSerializer})
    def post(self, request: Request, slug: str) -> Response:
        membership = services.member_invite(
            inviter=request_user(request), slug=slug, username=body_object(request).get("username")
        )
        return Response(
            {"user": user_payload(membership.user), "role": membership.role},
            status=status.HTTP_201_CREATED,
        )


class MessageListView(RealtimeAPIView):
    """History, cursor-paginated by seq; post a message."""

    @extend_schema(
        parameters=[
            OpenApiParameter("before", OpenApiTypes.INT, description="only seq < before"),
            OpenApiParameter("after", OpenApiTypes.INT, description="only seq > after; ascending"),
            OpenApiParameter("limit", OpenApiTypes.INT, description="1 to 100, default 50"),
        ],
        responses={200: MessagePageSerializer},
    )
    def get(self, request: Request, slug: str) -> Response:
        room = selectors.room_access_by_slug(user=request_user(request), slug=slug).room
        before, after, limit = page_params(request)
        rows, more = selectors.messages_page(room=room, before=before, after=after, limit=limit)
        results = [events.message_payload(m, room.slug) for m in rows]
        seqs = [m.seq for m in rows]
        next_url = previous_url = None
        if after is not None:  # ascending: next goes newer, previous older
            if more:
                next_url = self._link(request, after=seqs[-1], limit=limit)
            if seqs and seqs[0] > 1:
                previous_url = self._link(request, before=seqs[0], limit=limit)
        else:  # descending: next goes older, previous newer
            if more:
                next_url = self._link(request, before=seqs[-1], limit=limit)
            if seqs and seqs[0] < room.last_seq:
                previous_url = self._link(request, after=seqs[0], limit=limit)
        return Response({"results": results, "next": next_url, "previous": previous_url})

    @staticmethod
    def _link(request: Request, **params: int) -> str:
        return request.build_absolute_uri(f"{request.path}?{urlencode(params)}")

    @extend_schema(request=MessageCreateSerializer, responses={201: MessageSerializer})
    def post(self, request: Request, slug: str) -> Response:
        body = body_object(request)
        if "content" not in body:
            raise BadRequest("'content' is required")
        client_id = body.get("client_id")
        if client_id is None:
            client_id = uuid.uuid4()  # a client that cannot retry needs none
        result = services.message_send(
            user=request_user(request), slug=slug, content=body["content"], client_id=client_id
        )
        response = Response(result.payload, status=status.HTTP_201_CREATED)
        if not result.created:
            response["Idempotent-Replayed"] = "true"
        return response


class ReadView(RealtimeAPIView):
    """Move the read position forward (never back)."""

    @extend_schema(request=ReadSerializer, responses={200: ReadPositionSerializer})
    def post(self, request: Request, slug: str) -> Response:
        body = body_object(request)
        position = services.read_mark(user=request_user(request), slug=slug, seq=body.get("seq"))
        return Response({"room": slug, "last_read_seq": position})


class ReceiptListView(RealtimeAPIView):
    """Members' read positions."""

    @extend_schema(responses={200: ReceiptSerializer(many=True)})
    def get(self, request: Request, slug: str) -> Response:
        room = selectors.room_access_by_slug(user=request_user(request), slug=slug).room
        return Response(selectors.receipts(room=room))


class PresenceView(RealtimeAPIView):
    """Who is in the room now, online or away; with `offline=1`, then the
    members who are not, with their last-seen time."""

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "offline",
                OpenApiTypes.BOOL,
                description="1: also list up to 100 members not here, with last_seen_at",
            )
        ],
        responses={200: PresenceSerializer(many=True)},
    )
    def get(self, request: Request, slug: str) -> Response:
        room = selectors.room_access_by_slug(user=request_user(request), slug=slug).room
        # The shared store, as every process's WebSocket `joined` reads it.
        present = async_to_sync(tracking.members)(room_id=room.pk)
        if request.query_params.get("offline") in ("1", "true"):
            present += selectors.room_members_offline(
                room_id=room.pk, present_user_ids=[p["user"]["id"] for p in present], limit=MAX_PAGE
            )
        return Response(present)


def realtime_endpoints_only(endpoints: list) -> list:
    """The schema's hook: the package's own endpoints, none of the site's."""
    return [
        endpoint
        for endpoint in endpoints
        if issubclass(getattr(endpoint[3], "cls", object), RealtimeAPIView)
    ]


SCHEMA_SETTINGS = {
    "TITLE": "django-realtime API",
    "DESCRIPTION": (
        "Rooms, history, read positions, receipts, presence and notifications."
        " WebSocket and SSE: see docs/protocol.md."
    ),
    "VERSION": __version__,
    "COMPONENT_SPLIT_REQUEST": True,
    "PREPROCESSING_HOOKS": ["chat.views.realtime_endpoints_only"],
}


class SchemaView(SpectacularAPIView):
    """The OpenAPI 3 schema of the package's REST API, under the site's prefix."""

    authentication_classes: list = []
    permission_classes: list = []
    custom_settings = SCHEMA_SETTINGS
