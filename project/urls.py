"""
Provides the demo's URLs: the site's own (admin, login with its throttle) and the
package's (django_realtime.urls: REST, SSE, pages, healthz, readyz, metrics), included
at the root as §0 of the contract shows under a prefix.
"""

from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from django_realtime import health

from . import live
from .views import LoginView

urlpatterns = [
    # Browsers ask for /favicon.ico on every page without a <link rel="icon"> (the admin's).
    path("favicon.ico", RedirectView.as_view(url=static("realtime/favicon.svg"), permanent=True)),
    # Each demo process serves its metrics openly on its own port, for the bench and
    # the monitoring that reach it there; nginx answers /metrics with 404 to the world
    # (deploy/nginx.conf). A site without such a listener keeps the package's own
    # metrics (staff or REALTIME["METRICS_TOKEN"]).
    path("metrics", health.open_metrics, name="metrics"),
    path("admin/", admin.site.urls),
    # The demo's own login view, throttled (django_realtime.logins), before Django's others.
    path("accounts/login/", LoginView.as_view(), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    # The live board: a page of templates and live HTML only (contract §10).
    path("live/", live.board, name="live-board"),
    path("", include("django_realtime.urls")),
]
