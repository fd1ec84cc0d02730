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
        ]

    def __str__(self) -> str:
        return f"{self.kind} for {self.recipient_id} #{self.pk}"
