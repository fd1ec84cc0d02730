"""The demo's user admin: Django's own, with the package's announcement action."""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.models import User

from notifications.admin import AnnouncementActionMixin

from .models import Task

admin.site.unregister(User)


@admin.register(User)
class UserAdmin(AnnouncementActionMixin, DjangoUserAdmin):
    actions = ["send_announcement"]


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    """The live board's tasks: a save here is on every open board at once."""

    list_display = ["title", "owner", "done", "created_at"]
    list_filter = ["done"]
