"""
Provides the notifications table: one row per thing a user should be told of.

Fields and indexes only; every write goes through notifications.services.
"""

from django.conf import settings
from django.db import models


class Notification(models.Model):
    # No index of its own: (recipient, -id) below serves every lookup by recipient.
    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="realtime_notifications",
        db_index=False,
    )
    # "mention", "announcement", …; `data` is shaped by the kind (docs/protocol.md).
    kind = models.CharField(max_length=32)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True)
    # The e-mail digest's mark (notifications.digests): null while it may
    # still be e-mailed; EMAILED or SKIPPED once decided, never again.
    email_state = models.PositiveSmallIntegerField(null=True, blank=True)

    EMAILED, SKIPPED = 1, 2

    class Meta:
        ordering = ["-id"]
        indexes = [
            # Lists, pages and resumes: a user's notifications by id.
            models.Index(fields=["recipient", "-id"], name="notification_recipient_id"),
            # The bell's unread count reads only the unread rows.
            models.Index(
                fields=["recipient"],
                condition=models.Q(read_at__isnull=True),
                name="notification_unread",
            ),
            # The digest's due scan: only rows still waiting for one, by age.
            models.Index(
                fields=["created_at"],
                condition=models.Q(read_at__isnull=True, email_state__isnull=True),
                name="notification_digest_due",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} for {self.recipient_id} #{self.pk}"


class PushSubscription(models.Model):
    """One browser's Web Push subscription (PushSubscription.toJSON()) for a user."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="push_subscriptions"
    )
    # Under one of REALTIME["WEBPUSH_ENDPOINTS"] (checked by notifications.push).
    endpoint = models.CharField(max_length=2048, unique=True)
    p256dh = models.CharField(max_length=128)
    auth = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["user"], name="push_subscription_user")]

    def __str__(self) -> str:
        return f"push for {self.user_id}: {self.endpoint[:60]}"


class NotificationPreference(models.Model):
    """A user's offline channels; a user without a row has both on."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="notification_preference",
    )
    push = models.BooleanField(default=True)
    email = models.BooleanField(default=True)

    def __str__(self) -> str:
        return f"preferences of {self.user_id}"


class PendingPush(models.Model):
    """The push due-queue (notifications.push): one row per notification whose
    recipient had a subscription, written with the notification, deleted
    once sent (or found unneeded). A sender claims rows until `claimed_until`;
    a claim whose process died lapses and another process sends them."""

    notification = models.OneToOneField(
        Notification, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    claimed_until = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)

    def __str__(self) -> str:
        return f"push of #{self.notification_id}"
