"""The admin: the announcement action on users, and notifications browsable."""

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.test import Client

from notifications import services
from notifications.models import Notification

USERS_URL = "/admin/auth/user/"


@pytest.fixture
def staff(make_user):
    admin = make_user("admin", is_staff=True)
    admin.is_superuser = True
    admin.save()
    client = Client()
    client.force_login(admin)
    return admin, client


def test_the_announcement_action_asks_for_the_text_first(staff, bob, carol):
    _, client = staff
    response = client.post(
        USERS_URL, {"action": "send_announcement", ACTION_CHECKBOX_NAME: [bob.pk, carol.pk]}
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "Send an announcement" in page and 'name="text"' in page
    assert "bob" in page and "carol" in page
    assert not Notification.objects.exists()


def test_the_announcement_action_notifies_the_chosen_users_only(staff, alice, bob, carol):
    admin, client = staff
    response = client.post(
        USERS_URL,
        {
            "action": "send_announcement",
            ACTION_CHECKBOX_NAME: [bob.pk, carol.pk],
            "apply": "Send",
            "text": "The server restarts at noon.",
        },
        follow=True,
    )
    assert response.status_code == 200
    assert "Announcement sent to 2 users" in response.content.decode()
    rows = list(Notification.objects.order_by("recipient_id"))
    assert [n.recipient_id for n in rows] == sorted([bob.pk, carol.pk])
    assert {n.kind for n in rows} == {"announcement"}
    assert rows[0].data == {
        "text": "The server restarts at noon.",
        "from": {"id": admin.pk, "username": "admin"},
    }


def test_an_empty_announcement_is_refused_with_the_form_again(staff, bob):
    _, client = staff
    response = client.post(
        USERS_URL,
        {"action": "send_announcement", ACTION_CHECKBOX_NAME: [bob.pk], "apply": "Send"},
    )
    assert response.status_code == 200
    assert "This field is required" in response.content.decode()
    assert not Notification.objects.exists()


def test_notifications_are_browsable_searchable_and_filterable(staff, alice, bob):
    _, client = staff
    services.notify(recipient=bob, kind="announcement", data={"text": "x"})
    read = services.notify(recipient=alice, kind="mention", data={"room": "general"})
    services.notification_mark_read(user=alice, notification_id=read.pk)
    url = "/admin/notifications/notification/"
    assert client.get(url).status_code == 200
    found = client.get(url, {"q": "bob"})
    assert found.status_code == 200 and found.context["cl"].result_count == 1
    assert client.get(url, {"kind": "mention"}).context["cl"].result_count == 1
    assert client.get(url, {"read": "no"}).context["cl"].result_count == 1
    assert client.get(url, {"read": "yes"}).context["cl"].result_count == 1
    assert client.get(url + "add/").status_code == 403
