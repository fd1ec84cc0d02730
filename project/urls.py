"""
Provides the demo's URLs: the site's own (admin, login with its throttle) and the
package's (django_realtime.urls: REST, SSE, pages, healthz, readyz, and metrics for
staff or the bearer of METRICS_TOKEN), included
at the root as §0 of the contract shows under a prefix.
"""

from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from . import live
from .views import LoginView

urlpatterns = [
    # Browsers ask for /favicon.ico on every page without a <link rel="icon"> (the admin's).
    path("favicon.ico", RedirectView.as_view(url=static("realtime/favicon.svg"), permanent=True)),
    path("admin/", admin.site.urls),
    # The demo's own login view, throttled (django_realtime.logins), before Django's others.
    path("accounts/login/", LoginView.as_view(), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    # The live board: a page of templates and live HTML only (contract §10).
    path("live/", live.board, name="live-board"),
    path("", include("django_realtime.urls")),
]
