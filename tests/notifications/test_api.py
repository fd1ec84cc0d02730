"""The notifications REST API: what a client of /api/notifications/ sees."""

import pytest
from rest_framework.test import APIClient

from notifications import services
from notifications.models import Notification


def announce(user, n=1):
    return [
        services.notify(recipient=user, kind="announcement", data={"text": f"n{i}"})
        for i in range(n)
    ]


def test_the_list_is_newest_first_in_the_websocket_shape(api, bob):
    first, second = announce(bob, 2)
    response = api(bob).get("/api/notifications/")
    assert response.status_code == 200
    body = response.json()
    assert [n["id"] for n in body["results"]] == [second.pk, first.pk]
    assert body["results"][0] == {
        "id": second.pk,
        "kind": "announcement",
        "data": {"text": "n1"},
        "created_at": body["results"][0]["created_at"],
        "read": False,
    }
    assert body["results"][0]["created_at"].endswith("Z")
    assert body["next"] is None and body["previous"] is None


def test_unread_1_lists_only_unread_ones(api, bob):
    rows = announce(bob, 3)
    services.notification_mark_read(user=bob, notification_id=rows[1].pk)
    body = api(bob).get("/api/notifications/?unread=1").json()
    assert [n["id"] for n in body["results"]] == [rows[2].pk, rows[0].pk]
    everything = api(bob).get("/api/notifications/?unread=0").json()
    assert len(everything["results"]) == 3
    assert [n["read"] for n in everything["results"]] == [False, True, False]


def test_pages_follow_next_links_older_and_limit_is_capped(api, bob):
    rows = announce(bob, 5)
    client = api(bob)
    page = client.get("/api/notifications/?limit=2").json()
    assert [n["id"] for n in page["results"]] == [rows[4].pk, rows[3].pk]
    seen = [n["id"] for n in page["results"]]
    while page["next"]:
        page = client.get(page["next"]).json()
        seen += [n["id"] for n in page["results"]]
    assert seen == [n.pk for n in reversed(rows)]
    before = client.get(f"/api/notifications/?before={rows[2].pk}").json()
    assert [n["id"] for n in before["results"]] == [rows[1].pk, rows[0].pk]
    assert before["previous"] is not None
    announce(bob, 100)
    assert len(client.get("/api/notifications/?limit=1000").json()["results"]) == 100


@pytest.mark.parametrize(
    "query", ["unread=maybe", "limit=0", "limit=-1", "before=x", "before=" + "9" * 30]
)
def test_bad_parameters_are_400(api, bob, query):
    response = api(bob).get(f"/api/notifications/?{query}")
    assert response.status_code == 400
    assert response.json()["code"] == "BAD_REQUEST"


def test_the_unread_count_moves_as_notifications_come_and_are_read(api, bob):
    client = api(bob)
    assert client.get("/api/notifications/unread-count/").json() == {"count": 0}
    rows = announce(bob, 3)
    assert client.get("/api/notifications/unread-count/").json() == {"count": 3}
    response = client.post(f"/api/notifications/{rows[0].pk}/read/")
    assert response.status_code == 200
    assert response.json()["id"] == rows[0].pk and response.json()["read"] is True
    assert client.get("/api/notifications/unread-count/").json() == {"count": 2}
    assert client.post("/api/notifications/read-all/").json() == {"marked": 2}
    assert client.get("/api/notifications/unread-count/").json() == {"count": 0}
    assert client.post("/api/notifications/read-all/").json() == {"marked": 0}


def test_another_users_notification_is_invisible_and_404(api, alice, bob):
    (hers,) = announce(alice)
    client = api(bob)
    assert client.get("/api/notifications/").json()["results"] == []
    assert client.get("/api/notifications/unread-count/").json() == {"count": 0}
    response = client.post(f"/api/notifications/{hers.pk}/read/")
    assert response.status_code == 404
    assert response.json()["code"] == "NOT_FOUND"
    client.post("/api/notifications/read-all/")
    hers.refresh_from_db()
    assert hers.read_at is None


@pytest.mark.parametrize("pk", ["0", "abc", "9" * 30, "-1"])
def test_a_nonsense_id_is_404_not_500(api, bob, pk):
    response = api(bob).post(f"/api/notifications/{pk}/read/")
    assert response.status_code == 404


def test_anonymous_requests_are_401(db):
    client = APIClient()
    assert client.get("/api/notifications/").status_code == 401
    assert client.get("/api/notifications/unread-count/").status_code == 401
    assert client.post("/api/notifications/read-all/").status_code == 401
    assert client.post("/api/notifications/1/read/").status_code == 401


def test_session_writes_need_csrf(bob):
    (mine,) = announce(bob)
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(bob)
    assert client.post("/api/notifications/read-all/").status_code == 403
    assert client.post(f"/api/notifications/{mine.pk}/read/").status_code == 403
    assert Notification.objects.filter(read_at__isnull=True).count() == 1


def test_a_mention_over_rest_shows_up_in_the_recipients_list(api, alice, bob, general):
    api(alice).post("/api/rooms/general/messages/", {"content": "hi @bob"}, format="json")
    (mention,) = api(bob).get("/api/notifications/").json()["results"]
    assert mention["kind"] == "mention"
    assert mention["data"]["room"] == "general"
    assert mention["data"]["from"]["username"] == "alice"


def test_the_list_costs_one_query(api, bob, django_assert_num_queries):
    announce(bob, 3)
    client = api(bob)
    with django_assert_num_queries(1):
        client.get("/api/notifications/?unread=1")


def test_the_schema_documents_the_notification_endpoints(db):
    response = APIClient().get("/api/schema/?format=json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {
        "/api/notifications/",
        "/api/notifications/unread-count/",
        "/api/notifications/read-all/",
        "/api/notifications/{id}/read/",
    } <= set(paths)
    listed = {p["name"] for p in paths["/api/notifications/"]["get"]["parameters"]}
    assert {"unread", "before", "limit"} <= listed
