"""
Provides the DRF shapes of the notifications API, for the OpenAPI schema.
Output is built by notifications.events.notification_payload, the same
function that builds the `notification` frame of the WebSocket.
"""

from rest_framework import serializers


class NotificationSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    # The API's field is called `data`, which DRF's Serializer also names a property.
    data = serializers.JSONField()  # type: ignore[assignment]
    created_at = serializers.CharField()
    read = serializers.BooleanField()


class NotificationPageSerializer(serializers.Serializer):
    results = NotificationSerializer(many=True)
    next = serializers.CharField(allow_null=True)
    previous = serializers.CharField(allow_null=True)


class UnreadCountSerializer(serializers.Serializer):
    count = serializers.IntegerField()


class MarkedSerializer(serializers.Serializer):
    marked = serializers.IntegerField()


class PushKeySerializer(serializers.Serializer):
    public_key = serializers.CharField(help_text="the VAPID application server key, base64url")


class PushKeysSerializer(serializers.Serializer):
    p256dh = serializers.CharField()
    auth = serializers.CharField()


class PushSubscriptionSerializer(serializers.Serializer):
    """A browser's PushSubscription.toJSON() (expirationTime is ignored)."""

    endpoint = serializers.CharField(help_text="under one of REALTIME['WEBPUSH_ENDPOINTS']")
    keys = PushKeysSerializer()


class PushEndpointSerializer(serializers.Serializer):
    endpoint = serializers.CharField()


class PreferencesSerializer(serializers.Serializer):
    push = serializers.BooleanField()
    email = serializers.BooleanField()


class PreferencesPatchSerializer(serializers.Serializer):
    push = serializers.BooleanField(required=False)
    email = serializers.BooleanField(required=False)
