"""
Provides every URL the package serves over HTTP, under the prefix the site
includes it at: the REST API, the SSE streams, the pages and their assets
(chat.urls, notifications.urls, in their namespaces `chat` and
`notifications`), and the probes `healthz`, `readyz` and `metrics`
(namespace `realtime`; metrics for staff and METRICS_TOKEN only).

    path("rt/", include("django_realtime.urls"))   # /rt/api/…, /rt/events/…, /rt/healthz
"""

from django.urls import include, path

from . import health

health_patterns = (
    [
        path("healthz", health.healthz, name="healthz"),
        path("readyz", health.readyz, name="readyz"),
        path("metrics", health.metrics, name="metrics"),
    ],
    "realtime",
)

urlpatterns = [
    path("", include(health_patterns)),
    path("", include("chat.urls")),
    path("", include("notifications.urls")),
]
