"""
Provides the notifications routes: the REST API (included under /api/) and
the Server-Sent Events streams (included under /events/).
"""

from django.urls import path

from . import sse, views

urlpatterns = [
    path("notifications/", views.NotificationListView.as_view(), name="api-notifications"),
    path(
        "notifications/unread-count/",
        views.UnreadCountView.as_view(),
        name="api-notifications-unread-count",
    ),
    path(
        "notifications/read-all/",
        views.MarkAllReadView.as_view(),
        name="api-notifications-read-all",
    ),
    path(
        "notifications/<str:pk>/read/", views.MarkReadView.as_view(), name="api-notification-read"
    ),
]

event_urlpatterns = [
    path("notifications/", sse.notification_events, name="events-notifications"),
    path("rooms/<str:slug>/", sse.room_events, name="events-room"),
]
