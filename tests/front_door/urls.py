"""A site's URLs: its own beside the package's one include, under a prefix."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("rt/", include("django_realtime.urls")),
]
