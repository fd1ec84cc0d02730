from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from notifications import urls as notification_urls
from project import health

urlpatterns = [
    # Browsers ask for /favicon.ico on every page without a <link rel="icon"> (the admin's).
    path("favicon.ico", RedirectView.as_view(url=static("realtime/favicon.svg"), permanent=True)),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/", include("chat.urls")),
    path("api/", include("notifications.urls")),
    path("events/", include(notification_urls.event_urlpatterns)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("", include("chat.page_urls")),
]
