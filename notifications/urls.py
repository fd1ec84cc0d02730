"""
Provides the notifications URLs under the prefix the site includes them at:
the REST API (`api/notifications/…`) and the SSE stream
(`events/notifications/`).

    path("rt/", include("notifications.urls"))

Reverse them in the `notifications` namespace.
"""

from django.urls import path

from . import sse, views

app_name = "notifications"

urlpatterns = [
    path("api/notifications/", views.NotificationListView.as_view(), name="api-notifications"),
    path(
        "api/notifications/unread-count/",
        views.UnreadCountView.as_view(),
        name="api-notifications-unread-count",
    ),
    path(
        "api/notifications/read-all/",
        views.MarkAllReadView.as_view(),
        name="api-notifications-read-all",
    ),
    path(
        "api/notifications/preferences/",
        views.PreferencesView.as_view(),
        name="api-notification-preferences",
    ),
    path("api/push/key/", views.PushKeyView.as_view(), name="api-push-key"),
    path(
        "api/push/subscriptions/",
        views.PushSubscriptionsView.as_view(),
        name="api-push-subscriptions",
    ),
    path("notifications/unsubscribe/<str:token>/", views.unsubscribe, name="unsubscribe"),
    path("push-sw.js", views.service_worker, name="push-service-worker"),
    path(
        "api/notifications/<str:pk>/read/",
        views.MarkReadView.as_view(),
        name="api-notification-read",
    ),
    path("events/notifications/", sse.notification_events, name="events-notifications"),
]
