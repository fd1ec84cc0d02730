"""
Provides the presence admin: last-seen times, searchable by user.
"""

from django.contrib import admin

from django_realtime.users import username_path

from .models import UserPresence


@admin.register(UserPresence)
class UserPresenceAdmin(admin.ModelAdmin):
    list_display = ["user", "last_seen_at"]
    search_fields = [username_path("user")]
    list_filter = ["last_seen_at"]
    list_select_related = ["user"]
    readonly_fields = ["user", "last_seen_at"]
    date_hierarchy = "last_seen_at"

    def has_add_permission(self, request) -> bool:
        return False  # written by presence.services only
