"""Offline reach in-process: preferences, the push endpoints' refusals, the
schema, and the digest's claim on the test PostgreSQL (live tests:
tests/live/test_offline_reach_live.py)."""

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from notifications import digests, push, services
from notifications.models import Notification

pytestmark = pytest.mark.django_db


def test_preferences_default_on_and_patch_validates(api, alice):
    client = api(alice)
    assert client.get("/api/notifications/preferences/").json() == {"push": True, "email": True}
    changed = client.patch("/api/notifications/preferences/", {"email": False}, format="json")
    assert changed.json() == {"push": True, "email": False}
    for bad in ({"email": "no"}, {"sms": True}):
        response = client.patch("/api/notifications/preferences/", bad, format="json")
        assert response.status_code == 400
    assert client.get("/api/notifications/preferences/").json() == {"push": True, "email": False}


def test_push_key_is_404_without_a_key_and_the_public_key_with_one(api, alice, realtime):
    client = api(alice)
    assert client.get("/api/push/key/").status_code == 404
    realtime.WEBPUSH_VAPID_PRIVATE_KEY = push.generate_private_key_pem()
    key = client.get("/api/push/key/").json()["public_key"]
    assert key == push.public_key() and len(key) == 87  # 65 bytes, base64url


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://fcm.googleapis.com/fcm/send/x",
        "https://fcm.googleapis.com.evil.example/x",
        "https://user@fcm.googleapis.com/x",
        "https://10.0.0.1/x",
        "https://fcm.googleapis.com:8443/x",
    ],
)
def test_endpoints_outside_the_push_services_are_refused(endpoint):
    assert not push.endpoint_allowed(endpoint)


def test_the_browsers_push_services_are_allowed():
    for endpoint in (
        "https://fcm.googleapis.com/fcm/send/abc",
        "https://updates.push.services.mozilla.com/wpush/v2/abc",
        "https://web.push.apple.com/QGx",
        "https://wns2-par02p.notify.windows.com/w/?token=abc",
    ):
        assert push.endpoint_allowed(endpoint), endpoint


def test_the_schema_lists_the_new_endpoints(api, alice):
    paths = api(alice).get("/api/schema/?format=json").json()["paths"]
    assert {"get", "patch"} <= set(paths["/api/notifications/preferences/"])
    assert "get" in paths["/api/push/key/"]
    assert {"post", "delete"} <= set(paths["/api/push/subscriptions/"])


def test_a_due_digest_is_sent_once_and_skips_users_without_address(alice, bob, realtime):
    realtime.EMAIL_DIGEST_AFTER_SECONDS = 60
    alice.email = "alice@example.com"
    alice.save()
    services.notify_many(recipients=[alice, bob], kind="announcement", data={"text": "hi"})
    Notification.objects.update(created_at=timezone.now() - timedelta(seconds=61))
    assert digests.send_due() == 1
    assert digests.send_due() == 0
    assert [m.to for m in mail.outbox] == [["alice@example.com"]]
    assert "hi" in mail.outbox[0].body
    assert dict(Notification.objects.values_list("recipient_id", "email_state")) == {
        alice.pk: Notification.EMAILED,
        bob.pk: Notification.SKIPPED,
    }
