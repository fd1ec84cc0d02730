"""The demo's user admin: Django's own, with the package's announcement action."""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.models import User

from notifications.admin import AnnouncementActionMixin

admin.site.unregister(User)


@admin.register(User)
class UserAdmin(AnnouncementActionMixin, DjangoUserAdmin):
    actions = ["send_announcement"]
