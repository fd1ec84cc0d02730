"""
Provides the DRF shapes of the chat API. Message output is built by
chat.events.message_payload, the same function that builds the WebSocket
frame; MessageSerializer describes that shape for the OpenAPI schema.
"""

from rest_framework import serializers

from django_realtime.conf import realtime_settings


class UserSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()


class RoomSerializer(serializers.Serializer):
    slug = serializers.SlugField(max_length=64)
    name = serializers.CharField(max_length=120)
    is_private = serializers.BooleanField(default=False)
    last_seq = serializers.IntegerField(read_only=True)
    unread_count = serializers.IntegerField(read_only=True, default=0)
    last_read_seq = serializers.IntegerField(read_only=True, default=0)


class RoomPageSerializer(serializers.Serializer):
    results = RoomSerializer(many=True)
    next = serializers.CharField(allow_null=True)
    previous = serializers.CharField(allow_null=True)


class InviteSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)


class MemberSerializer(serializers.Serializer):
    user = UserSerializer()
    role = serializers.CharField()


class MessageSerializer(serializers.Serializer):
    type = serializers.CharField(read_only=True)
    room = serializers.CharField(read_only=True)
    id = serializers.IntegerField(read_only=True)
    seq = serializers.IntegerField(read_only=True)
    client_id = serializers.UUIDField()
    user = UserSerializer(read_only=True)
    content = serializers.CharField()
    created_at = serializers.CharField(read_only=True)


class MessageCreateSerializer(serializers.Serializer):
    # Validation of content happens in chat.services.cleaning.clean_content, shared with the
    # WebSocket; here only the shape is declared (and unknown fields ignored).
    content = serializers.CharField(max_length=realtime_settings.CHAT_MAX_CONTENT_CHARS)
    client_id = serializers.UUIDField(required=False)


class MessagePageSerializer(serializers.Serializer):
    results = MessageSerializer(many=True)
    next = serializers.CharField(allow_null=True)
    previous = serializers.CharField(allow_null=True)


class ReadSerializer(serializers.Serializer):
    seq = serializers.IntegerField(min_value=0)


class ReadPositionSerializer(serializers.Serializer):
    room = serializers.CharField()
    last_read_seq = serializers.IntegerField()


class ReceiptSerializer(serializers.Serializer):
    user = UserSerializer()
    seq = serializers.IntegerField()


class PresenceSerializer(serializers.Serializer):
    user = UserSerializer()
    status = serializers.ChoiceField(choices=["online", "away", "offline"])
    # Only with ?offline=1, on members who are not here (null: never seen).
    last_seen_at = serializers.DateTimeField(required=False, allow_null=True)


class CredentialsSerializer(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField()


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField()


class TicketSerializer(serializers.Serializer):
    ticket = serializers.CharField()
