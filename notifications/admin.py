"""
Provides the notifications admin: notifications browsable, searchable by
recipient and filterable by kind and read state, and AnnouncementActionMixin,
the "Send an announcement" action for the site's user admin. The package
registers its own models only; a site adds the action to its user admin:

(docs/architecture.md, "Why the modules are as they are")
"""

from typing import TYPE_CHECKING

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from django_realtime.payloads import user_payload
from django_realtime.rest import request_user
from django_realtime.users import username_path

from . import services
from .models import Notification, NotificationPreference, PushSubscription


class ReadFilter(admin.SimpleListFilter):
    title = "read"
    parameter_name = "read"

    def lookups(self, request, model_admin):
        return [("yes", "Read"), ("no", "Unread")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(read_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(read_at__isnull=True)
        return queryset


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ["id", "recipient", "kind", "created_at", "is_read"]
    list_filter = ["kind", ReadFilter]
    search_fields = [username_path("recipient")]
    list_select_related = ["recipient"]
    readonly_fields = ["recipient", "kind", "data", "created_at", "read_at", "email_state"]
    ordering = ["-id"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # written by notifications.services only

    @admin.display(boolean=True, description="read")
    def is_read(self, notification: Notification) -> bool:
        return notification.read_at is not None


class AnnouncementForm(forms.Form):
    text = forms.CharField(
        label="Announcement",
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 70}),
    )


if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin
else:
    _ModelAdmin = object


class AnnouncementActionMixin(_ModelAdmin):
    """The "Send an announcement" action, for a ModelAdmin of the user model."""

    actions = ["send_announcement"]

    @admin.action(description="Send an announcement")
    def send_announcement(
        self, request: HttpRequest, queryset: QuerySet
    ) -> TemplateResponse | None:
        """Ask for the text (an intermediate page), then notify the chosen users."""
        form = AnnouncementForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            sent = services.notify_many(
                recipients=queryset,
                kind=services.ANNOUNCEMENT,
                data={
                    "text": form.cleaned_data["text"],
                    "from": user_payload(request_user(request)),
                },
            )
            self.message_user(request, f"Announcement sent to {len(sent)} users.", messages.SUCCESS)
            return None
        return TemplateResponse(
            request,
            "admin/notifications/announce.html",
            {
                **self.admin_site.each_context(request),
                "title": "Send an announcement",
                "opts": self.model._meta,
                "form": form,
                "users": queryset,
                "action": "send_announcement",
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "select_across": request.POST.get("select_across", "0"),
            },
        )


@admin.register(PushSubscription)
class PushSubscriptionAdmin(admin.ModelAdmin):
    """Each user's Web Push subscriptions (browsers); an admin may remove
    one, never add one (a browser subscribes itself, notifications.push)."""

    list_display = ["id", "user", "push_service", "created_at"]
    search_fields = [username_path("user"), "endpoint"]
    list_select_related = ["user"]
    readonly_fields = ["user", "endpoint", "p256dh", "auth", "created_at"]
    ordering = ["-id"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="push service")
    def push_service(self, obj: PushSubscription) -> str:
        from urllib.parse import urlsplit

        return urlsplit(obj.endpoint).netloc


@admin.register(NotificationPreference)
class NotificationPreferenceAdmin(admin.ModelAdmin):
    """Who turned push or e-mail off (a user without a row has both on)."""

    list_display = ["user", "push", "email"]
    list_filter = ["push", "email"]
    search_fields = [username_path("user")]
    list_select_related = ["user"]
