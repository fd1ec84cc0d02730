"""
Provides the chat admin: rooms, members, messages and receipts, browsable,
searchable and filterable.
"""

from django.contrib import admin

from .models import Membership, Message, Room


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]
    fields = ["user", "role", "is_banned", "is_muted", "last_read_seq"]
    readonly_fields = ["last_read_seq"]


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "is_private", "last_seq", "created_at"]
    list_filter = ["is_private"]
    search_fields = ["slug", "name"]
    readonly_fields = ["last_seq", "created_at"]
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["room", "user", "role", "is_banned", "is_muted", "last_read_seq"]
    list_filter = ["role", "is_banned", "is_muted", "room"]
    search_fields = ["room__slug", "user__username"]
    autocomplete_fields = ["room", "user"]
    readonly_fields = ["last_read_seq"]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["room", "seq", "user", "content", "is_deleted", "created_at"]
    list_filter = ["room", "is_deleted"]
    search_fields = ["content", "user__username", "room__slug"]
    list_select_related = ["room", "user"]
    readonly_fields = ["room", "seq", "user", "client_id", "content", "created_at"]
    ordering = ["-created_at"]
