"""
Provides every chat URL under the prefix the site includes them at: the REST
API (`api/…`), its OpenAPI schema and docs, a room's SSE stream
(`events/rooms/…`), the pages (`""`, `rooms/<slug>/`) and their assets.

    path("rt/", include("chat.urls"))   # /rt/api/rooms/, /rt/events/rooms/x/, /rt/

Reverse them in the `chat` namespace: `reverse("chat:room", args=[slug])`.
"""

from django.urls import path

from django_realtime.topics import views as topics

from . import pages, sse, views
from .collab import views as collab

app_name = "chat"

urlpatterns = [
    path("api/auth/token/", views.TokenView.as_view(), name="api-token"),
    path("api/auth/ws-ticket/", views.TicketView.as_view(), name="api-ws-ticket"),
    path("api/rooms/", views.RoomListView.as_view(), name="api-rooms"),
    path("api/rooms/<str:slug>/members/", views.MemberView.as_view(), name="api-room-members"),
    path(
        "api/rooms/<str:slug>/messages/", views.MessageListView.as_view(), name="api-room-messages"
    ),
    path("api/rooms/<str:slug>/read/", views.ReadView.as_view(), name="api-room-read"),
    path(
        "api/rooms/<str:slug>/receipts/", views.ReceiptListView.as_view(), name="api-room-receipts"
    ),
    path("api/rooms/<str:slug>/presence/", views.PresenceView.as_view(), name="api-room-presence"),
    path("api/rooms/<str:slug>/docs/", collab.DocumentListView.as_view(), name="api-room-docs"),
    path(
        "api/rooms/<str:slug>/docs/<str:name>/", collab.DocumentView.as_view(), name="api-room-doc"
    ),
    path("api/topics/<str:topic>/publish/", topics.PublishView.as_view(), name="api-topic-publish"),
    path("api/schema/", views.SchemaView.as_view(), name="api-schema"),
    path("api/docs/", pages.api_docs, name="api-docs"),
    path("api/docs/assets/<str:name>", pages.docs_asset, name="api-docs-asset"),
    path("events/rooms/<str:slug>/", sse.room_events, name="events-room"),
    path("events/topics/<str:topic>/", topics.topic_events, name="events-topic"),
    path("assets/<path:name>", pages.asset, name="asset"),
    path("", pages.index, name="index"),
    path("rooms/<str:slug>/", pages.room, name="room"),
]
