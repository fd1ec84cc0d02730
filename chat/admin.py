"""
Provides the chat admin: rooms, members, messages and receipts, browsable,
searchable and filterable, and live moderation.

(docs/architecture.md, "Why the modules are as they are")
"""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.text import Truncator

from django_realtime.errors import ClientError
from django_realtime.rest import request_user
from django_realtime.users import username_path

from . import services
from .models import Membership, Message, ModerationAction, Room


class ReasonActionForm(ActionForm):
    """The changelist's action bar, with a reason for the audit trail (a ban sends it too)."""

    reason = forms.CharField(
        required=False,
        max_length=services.MAX_REASON_CHARS,
        widget=forms.TextInput(attrs={"placeholder": "Reason (optional)", "size": 30}),
    )


def _reason(request: HttpRequest) -> str:
    return request.POST.get("reason", "")


# A moderated flag: the services that set and clear it.
MODERATED_FLAGS = {
    "is_banned": (services.member_ban, services.member_unban),
    "is_muted": (services.member_mute, services.member_unmute),
}


def save_membership(*, moderator: Any, membership: Membership) -> None:
    """Save a membership edited in a form; a change of ban or mute goes through
    its service (broadcast, audit), everything else is saved as edited."""
    wanted = {flag: getattr(membership, flag) for flag in MODERATED_FLAGS}
    stored = None
    if membership.pk is not None:
        stored = Membership.objects.filter(pk=membership.pk).values(*MODERATED_FLAGS).first()
    for flag in MODERATED_FLAGS:
        setattr(membership, flag, stored[flag] if stored else False)
    membership.save()
    for flag, (set_flag, clear_flag) in MODERATED_FLAGS.items():
        if wanted[flag] != getattr(membership, flag):
            service = set_flag if wanted[flag] else clear_flag
            service(moderator=moderator, room=membership.room, user=membership.user)
            setattr(membership, flag, wanted[flag])


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

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        """Memberships edited inline are moderated through the services too."""
        if formset.model is not Membership:
            super().save_formset(request, form, formset, change)
            return
        memberships = formset.save(commit=False)
        for membership in formset.deleted_objects:
            services.member_remove(
                moderator=request_user(request), room=membership.room, user=membership.user
            )
        for membership in memberships:
            save_membership(moderator=request_user(request), membership=membership)
        formset.save_m2m()


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["room", "user", "role", "is_banned", "is_muted", "last_read_seq"]
    list_filter = ["role", "is_banned", "is_muted", "room"]
    search_fields = ["room__slug", username_path("user")]
    autocomplete_fields = ["room", "user"]
    list_select_related = ["room", "user"]
    action_form = ReasonActionForm
    actions = ["ban", "unban", "mute", "unmute"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # Moving a membership to another room or user would be a remove and an
        # invitation in one; do those instead.
        return ["room", "user", "last_read_seq"] if obj else ["last_read_seq"]

    def save_model(self, request: HttpRequest, obj: Membership, form: Any, change: bool) -> None:
        save_membership(moderator=request_user(request), membership=obj)

    def delete_model(self, request: HttpRequest, obj: Membership) -> None:
        services.member_remove(moderator=request_user(request), room=obj.room, user=obj.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for membership in queryset.select_related("room", "user"):
            services.member_remove(
                moderator=request_user(request), room=membership.room, user=membership.user
            )

    def _moderate(
        self, request: HttpRequest, queryset: QuerySet, flag: str, value: bool, verb: str
    ) -> None:
        set_flag, clear_flag = MODERATED_FLAGS[flag]
        service = set_flag if value else clear_flag
        changed = 0
        for membership in queryset.select_related("room", "user"):
            if getattr(membership, flag) == value:
                continue
            try:
                service(
                    moderator=request_user(request),
                    room=membership.room,
                    user=membership.user,
                    reason=_reason(request),
                )
            except ClientError as exc:
                self.message_user(request, f"{membership}: {exc.message}", messages.ERROR)
                continue
            changed += 1
        self.message_user(request, f"{verb} {changed} member{'s' if changed != 1 else ''}.")

    @admin.action(description="Ban selected members (kicked from the room at once)")
    def ban(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._moderate(request, queryset, "is_banned", True, "Banned")

    @admin.action(description="Unban selected members")
    def unban(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._moderate(request, queryset, "is_banned", False, "Unbanned")

    @admin.action(description="Mute selected members (they may read, not post)")
    def mute(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._moderate(request, queryset, "is_muted", True, "Muted")

    @admin.action(description="Unmute selected members")
    def unmute(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._moderate(request, queryset, "is_muted", False, "Unmuted")


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    """Messages are posted by users, never added here. Deleting one, from the
    list or its page, hides it (is_deleted) through `message_delete`: the room's
    open pages drop it at once and its seq stays taken, so seqs remain gap-free."""

    list_display = ["room", "seq", "user", "excerpt", "is_deleted", "created_at"]
    list_filter = ["room", ("user", admin.RelatedOnlyFieldListFilter), "is_deleted"]
    search_fields = ["content", username_path("user"), "room__slug"]
    list_select_related = ["room", "user"]
    readonly_fields = ["room", "seq", "user", "client_id", "content", "is_deleted", "created_at"]
    ordering = ["-created_at"]
    date_hierarchy = "created_at"
    action_form = ReasonActionForm
    actions = ["hide_selected"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="content")
    def excerpt(self, obj: Message) -> str:
        # Plain text: the admin escapes it (never format_html/mark_safe user content).
        return Truncator(obj.content).chars(120)

    def delete_model(self, request: HttpRequest, obj: Message) -> None:
        services.message_delete(
            moderator=request_user(request), message_id=obj.pk, reason=_reason(request)
        )

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for message_id in queryset.filter(is_deleted=False).values_list("pk", flat=True):
            services.message_delete(
                moderator=request_user(request), message_id=message_id, reason=_reason(request)
            )

    @admin.action(description="Hide selected messages (removed from open pages at once)")
    def hide_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        ids = list(queryset.filter(is_deleted=False).values_list("pk", flat=True))
        self.delete_queryset(request, queryset.filter(pk__in=ids))
        self.message_user(request, f"Hid {len(ids)} message{'s' if len(ids) != 1 else ''}.")


@admin.register(ModerationAction)
class ModerationActionAdmin(admin.ModelAdmin):
    """The audit trail: read-only, written by the moderation services only."""

    list_display = ["created_at", "moderator", "action", "room", "target_user", "message", "reason"]
    list_filter = [
        "action",
        "room",
        ("moderator", admin.RelatedOnlyFieldListFilter),
        ("target_user", admin.RelatedOnlyFieldListFilter),
    ]
    search_fields = [
        username_path("moderator"),
        username_path("target_user"),
        "room__slug",
        "reason",
        "message__content",
    ]
    list_select_related = ["moderator", "room", "target_user", "message"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
