"""
Provides the presence table: when each user was last seen.

Fields only; presence.services writes it when a user's last connection
anywhere closes or its lease expires.
"""

from django.conf import settings
from django.db import models


class UserPresence(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="realtime_presence"
    )
    # When the user's last connection closed (or was found dead); a user who
    # is online now keeps the time of their previous departure.
    last_seen_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-last_seen_at"]
        verbose_name = "user presence"
        verbose_name_plural = "user presence"

    def __str__(self) -> str:
        return f"{self.user} last seen {self.last_seen_at:%Y-%m-%d %H:%M:%S}"
