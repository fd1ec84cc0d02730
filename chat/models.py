"""
Provides the chat tables: rooms, memberships, messages and WebSocket tickets.

Fields, constraints and indexes only; every write goes through chat.services.
"""

from django.conf import settings
from django.db import models


class Room(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=120)
    is_private = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # The highest seq handed out; bumped under a row lock in the storing
    # transaction, so seqs are gap-free and commit in order.
    last_seq = models.PositiveBigIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Membership(models.Model):
    class Role(models.TextChoices):
        MEMBER = "member", "Member"
        MODERATOR = "moderator", "Moderator"
        OWNER = "owner", "Owner"

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="realtime_memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    is_banned = models.BooleanField(default=False)
    is_muted = models.BooleanField(default=False)
    last_read_seq = models.PositiveBigIntegerField(default=0)
    joined_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["room", "user"]
        constraints = [
            models.UniqueConstraint(fields=["room", "user"], name="membership_room_user_unique")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.room}"


class Message(models.Model):
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    seq = models.PositiveBigIntegerField()
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="realtime_messages"
    )
    client_id = models.UUIDField()
    content = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    is_deleted = models.BooleanField(default=False)

    class Meta:
        ordering = ["room", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["room", "seq"], name="message_room_seq_unique"),
            # Idempotency: a retried send finds the original instead of a twin.
            models.UniqueConstraint(
                fields=["user", "client_id"], name="message_user_client_id_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.room}#{self.seq}"


class WsTicket(models.Model):
    """A single-use, short-lived credential for /ws/?ticket=… (cross-origin browsers)."""

    key = models.CharField(max_length=64, primary_key=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # The credential the ticket was asked for with ("session" or "token", and
    # its key): the WebSocket it opens ends when that credential does.
    credential_kind = models.CharField(max_length=8, blank=True, default="")
    credential_key = models.CharField(max_length=128, blank=True, default="")

    def __str__(self) -> str:
        return f"ticket for {self.user}"


class ModerationAction(models.Model):
    """One moderator's act, kept for the audit trail: who did what, to whom, where, why.

    Foreign keys are SET_NULL so the trail outlives the rows it names.
    """

    class Action(models.TextChoices):
        MESSAGE_DELETE = "message_delete", "Delete message"
        BAN = "ban", "Ban"
        UNBAN = "unban", "Unban"
        MUTE = "mute", "Mute"
        UNMUTE = "unmute", "Unmute"
        REMOVE = "remove", "Remove member"

    moderator = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    action = models.CharField(max_length=32, choices=Action.choices)
    room = models.ForeignKey(
        Room, null=True, on_delete=models.SET_NULL, related_name="moderation_actions"
    )
    target_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    message = models.ForeignKey(
        Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["room", "-created_at"], name="moderation_room_created")]

    def __str__(self) -> str:
        return f"{self.moderator} {self.action} in {self.room}"


class Document(models.Model):
    """A room's shared document (contract §9): a Yjs document kept as a
    snapshot plus the updates logged since, numbered by a gap-free `seq`."""

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="documents")
    name = models.SlugField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now_add=True)
    # The highest seq handed out; bumped under a row lock in the storing
    # transaction, as Room.last_seq is, so seqs are gap-free and commit in order.
    last_seq = models.PositiveBigIntegerField(default=0, editable=False)
    # Every update up to snapshot_seq merged into one (chat.collab.services
    # document_compact); the log holds the ones after it.
    snapshot = models.BinaryField(default=b"", editable=False)
    snapshot_seq = models.PositiveBigIntegerField(default=0, editable=False)
    # len(snapshot) + the bytes of the log: what DOCS_MAX_DOCUMENT_BYTES bounds.
    stored_bytes = models.PositiveBigIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["room", "name"]
        constraints = [
            models.UniqueConstraint(fields=["room", "name"], name="document_room_name_unique")
        ]

    def __str__(self) -> str:
        return f"{self.room}/{self.name}"


class DocumentUpdate(models.Model):
    """One Yjs update of a document, as its client sent it (append-only)."""

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="updates")
    seq = models.PositiveBigIntegerField()
    data = models.BinaryField()
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["document", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["document", "seq"], name="documentupdate_seq_unique")
        ]

    def __str__(self) -> str:
        return f"{self.document_id}#{self.seq}"
