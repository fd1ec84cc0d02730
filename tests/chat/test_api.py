"""The REST API: what a client of /api/ sees, status codes included."""

import uuid

import pytest
from rest_framework.test import APIClient

from chat import services
from chat.models import Membership, Message, Room


def post_messages(user, slug, n):
    return [
        services.message_send(user=user, slug=slug, content=f"m{i}", client_id=str(uuid.uuid4()))
        for i in range(n)
    ]


# --- authentication ---------------------------------------------------------------


def test_a_token_is_exchanged_for_a_username_and_password(alice):
    response = APIClient().post(
        "/api/auth/token/", {"username": "alice", "password": "pw"}, format="json"
    )
    assert response.status_code == 200
    token = response.json()["token"]
    rooms = APIClient(headers={"Authorization": f"Token {token}"}).get("/api/rooms/")
    assert rooms.status_code == 200


@pytest.mark.parametrize(
    "body", [{"username": "alice", "password": "wrong"}, {"username": "alice"}, [], "x"]
)
def test_bad_credentials_are_a_400(alice, body):
    response = APIClient().post("/api/auth/token/", body, format="json")
    assert response.status_code == 400


def test_anonymous_requests_are_401(db):
    for path in ["/api/rooms/", "/api/rooms/general/messages/", "/api/auth/ws-ticket/"]:
        assert APIClient().get(path).status_code == 401


def test_a_ticket_is_issued_to_an_authenticated_user(api, alice):
    response = api(alice).post("/api/auth/ws-ticket/")
    assert response.status_code == 200 and len(response.json()["ticket"]) >= 32


def test_session_writes_need_csrf(alice, general):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post("/api/rooms/general/messages/", {"content": "hi"}, format="json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    assert not Message.objects.exists()


# --- rooms --------------------------------------------------------------------------


def test_room_list_shows_public_and_own_private_rooms_with_unread_counts(
    api, alice, bob, general, secret
):
    post_messages(alice, "general", 3)
    services.room_join(user=bob, slug="general")
    services.read_mark(user=bob, slug="general", seq=1)
    rooms = {r["slug"]: r for r in api(bob).get("/api/rooms/").json()["results"]}
    assert set(rooms) == {"general"}
    assert rooms["general"] == {
        "slug": "general",
        "name": "General",
        "is_private": False,
        "last_seq": 3,
        "unread_count": 2,
        "last_read_seq": 1,
    }
    mine = {r["slug"]: r for r in api(alice).get("/api/rooms/").json()["results"]}
    assert set(mine) == {"general", "secret"}
    assert mine["general"]["unread_count"] == 0  # her own messages


def test_a_banned_user_does_not_see_the_room(api, bob, general):
    Membership.objects.create(room=general, user=bob, is_banned=True)
    assert api(bob).get("/api/rooms/").json() == {"results": [], "next": None, "previous": None}


def test_room_list_costs_one_query(api, alice, general, secret, django_assert_num_queries):
    client = api(alice)
    with django_assert_num_queries(1):
        client.get("/api/rooms/")


def test_creating_a_room_makes_the_creator_its_owner(api, alice):
    response = api(alice).post(
        "/api/rooms/", {"slug": "team", "name": "Team", "is_private": True}, format="json"
    )
    assert response.status_code == 201
    assert response.json()["slug"] == "team" and response.json()["is_private"] is True
    assert Membership.objects.get(room__slug="team").role == "owner"
    again = api(alice).post("/api/rooms/", {"slug": "team", "name": "T"}, format="json")
    assert again.status_code == 400 and again.json()["code"] == "BAD_REQUEST"


def test_the_room_list_comes_a_page_at_a_time_by_slug(api, alice):
    """120 rooms: pages of `limit` (at most 100) with next and previous
    links that walk the whole list, each room once."""
    Room.objects.bulk_create(Room(slug=f"r{i:03}", name=f"R{i}") for i in range(120))
    client = api(alice)
    first = client.get("/api/rooms/").json()
    assert len(first["results"]) == 50 and first["previous"] is None
    assert first["results"][0]["slug"] == "r000"
    assert len(client.get("/api/rooms/?limit=1000").json()["results"]) == 100
    seen, url = [], "/api/rooms/?limit=40"
    while url:
        page = client.get(url).json()
        seen += [r["slug"] for r in page["results"]]
        url = page["next"]
    assert seen == [f"r{i:03}" for i in range(120)]
    back = client.get(client.get("/api/rooms/?after=r079&limit=40").json()["previous"]).json()
    assert [r["slug"] for r in back["results"]] == [f"r{i:03}" for i in range(40, 80)]
    for bad in ("?after=%00", "?before=a%20b", "?limit=0"):
        assert client.get("/api/rooms/" + bad).status_code == 400, bad


def test_room_creation_past_the_users_rate_is_429_and_creates_nothing(api, alice, realtime):
    realtime.CHAT_ROOM_CREATE_RATE = "2/h"
    client = api(alice)
    for slug in ("one", "two"):
        assert (
            client.post("/api/rooms/", {"slug": slug, "name": slug}, format="json").status_code
            == 201
        )
    refused = client.post("/api/rooms/", {"slug": "three", "name": "Three"}, format="json")
    assert refused.status_code == 429 and refused.json()["code"] == "RATE_LIMITED"
    assert int(refused["Retry-After"]) > 0
    assert not Membership.objects.filter(room__slug="three").exists()
    assert not Room.objects.filter(slug="three").exists()


def test_invites_let_a_user_into_a_private_room(api, alice, bob, secret):
    assert api(bob).get("/api/rooms/secret/messages/").status_code == 404
    response = api(alice).post("/api/rooms/secret/members/", {"username": "bob"}, format="json")
    assert response.status_code == 201 and response.json()["user"]["username"] == "bob"
    assert api(bob).get("/api/rooms/secret/messages/").status_code == 200


def test_a_non_member_may_not_invite_and_learns_nothing_of_the_room(api, bob, carol, secret):
    response = api(bob).post("/api/rooms/secret/members/", {"username": "carol"}, format="json")
    assert response.status_code == 404
    assert response.json() == {"detail": "no room 'secret'", "code": "NOT_FOUND"}


# --- history ------------------------------------------------------------------------


def test_history_is_newest_first_and_pages_backwards(api, alice, general):
    post_messages(alice, "general", 5)
    client = api(alice)
    page = client.get("/api/rooms/general/messages/?limit=2").json()
    assert [m["seq"] for m in page["results"]] == [5, 4]
    assert page["previous"] is None
    page2 = client.get(page["next"]).json()
    assert [m["seq"] for m in page2["results"]] == [3, 2]
    page3 = client.get(page2["next"]).json()
    assert [m["seq"] for m in page3["results"]] == [1]
    assert page3["next"] is None


def test_history_after_a_seq_is_ascending(api, alice, general):
    post_messages(alice, "general", 5)
    client = api(alice)
    page = client.get("/api/rooms/general/messages/?after=1&limit=2").json()
    assert [m["seq"] for m in page["results"]] == [2, 3]
    assert [m["seq"] for m in client.get(page["next"]).json()["results"]] == [4, 5]


def test_a_history_message_has_the_websocket_shape(api, alice, general):
    (sent,) = post_messages(alice, "general", 1)
    (message,) = api(alice).get("/api/rooms/general/messages/").json()["results"]
    assert message == sent.payload
    assert set(message) == {
        "type",
        "room",
        "id",
        "seq",
        "client_id",
        "user",
        "content",
        "created_at",
    }


def test_history_limit_is_capped_at_100(api, alice, general):
    post_messages(alice, "general", 3)
    page = api(alice).get("/api/rooms/general/messages/?limit=100000").json()
    assert len(page["results"]) == 3


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=-1",
        "limit=abc",
        "before=x",
        "after=-3",
        "before=1%20OR%201=1",
        "after=" + "9" * 40,
    ],
)
def test_bad_history_parameters_are_a_400(api, alice, general, query):
    response = api(alice).get(f"/api/rooms/general/messages/?{query}")
    assert response.status_code == 400


def test_history_of_an_unknown_room_is_404(api, alice, db):
    assert api(alice).get("/api/rooms/nope/messages/").status_code == 404


def test_history_costs_a_fixed_number_of_queries(
    api, alice, bob, general, django_assert_num_queries
):
    post_messages(alice, "general", 10)
    post_messages(bob, "general", 10)
    client = api(alice)
    # the membership with its room (the access rule), the page with its users
    with django_assert_num_queries(2):
        response = client.get("/api/rooms/general/messages/?limit=50")
    assert len(response.json()["results"]) == 20


# --- posting --------------------------------------------------------------------------


def test_posting_returns_201_and_the_message(api, alice, general):
    cid = str(uuid.uuid4())
    response = api(alice).post(
        "/api/rooms/general/messages/", {"content": "hello", "client_id": cid}, format="json"
    )
    assert response.status_code == 201
    body = response.json()
    assert body["content"] == "hello" and body["client_id"] == cid and body["seq"] == 1


def test_posting_again_with_the_client_id_returns_the_original(api, alice, general):
    cid = str(uuid.uuid4())
    client = api(alice)
    first = client.post(
        "/api/rooms/general/messages/", {"content": "a", "client_id": cid}, format="json"
    )
    again = client.post(
        "/api/rooms/general/messages/", {"content": "a", "client_id": cid}, format="json"
    )
    assert again.status_code == 201 and again["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert Message.objects.count() == 1


def test_server_set_fields_in_a_post_are_ignored(api, alice, bob, general):
    response = api(alice).post(
        "/api/rooms/general/messages/",
        {
            "content": "hi",
            "user": {"id": bob.pk, "username": "bob"},
            "seq": 99,
            "id": 7,
            "room": "elsewhere",
            "created_at": "2000-01-01T00:00:00Z",
        },
        format="json",
    )
    body = response.json()
    assert response.status_code == 201
    assert body["user"]["username"] == "alice" and body["seq"] == 1 and body["room"] == "general"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 400, "BAD_REQUEST"),
        ({"content": ""}, 400, "BAD_REQUEST"),
        ({"content": 5}, 400, "BAD_REQUEST"),
        ({"content": "x" * 4001}, 400, "TOO_LARGE"),
        ({"content": "a\u0000b"}, 400, "BAD_REQUEST"),
        ({"content": "x", "client_id": "nope"}, 400, "BAD_REQUEST"),
        ([1, 2], 400, "BAD_REQUEST"),
    ],
)
def test_bad_posts_get_a_clear_error(api, alice, general, body, status, code):
    response = api(alice).post("/api/rooms/general/messages/", body, format="json")
    assert response.status_code == status
    assert response.json()["code"] == code


def test_malformed_json_is_a_400(api, alice, general):
    response = api(alice).post(
        "/api/rooms/general/messages/", "{nope", content_type="application/json"
    )
    assert response.status_code == 400


def test_a_rest_flood_is_429_with_retry_after(api, alice, general, realtime):
    realtime.CHAT_MESSAGE_RATE = "3/10s"
    client = api(alice)
    codes = [
        client.post("/api/rooms/general/messages/", {"content": "x"}, format="json")
        for _ in range(4)
    ]
    assert [r.status_code for r in codes] == [201, 201, 201, 429]
    assert int(codes[-1]["Retry-After"]) >= 1


def test_a_muted_member_gets_403(api, bob, general):
    Membership.objects.create(room=general, user=bob, is_muted=True)
    response = api(bob).post("/api/rooms/general/messages/", {"content": "x"}, format="json")
    assert response.status_code == 403 and response.json()["code"] == "FORBIDDEN"


# --- read positions and receipts ------------------------------------------------------


def test_read_moves_forward_only_and_receipts_list_it(api, alice, bob, general):
    post_messages(alice, "general", 4)
    client = api(bob)
    assert client.post("/api/rooms/general/read/", {"seq": 3}, format="json").json() == {
        "room": "general",
        "last_read_seq": 3,
    }
    assert (
        client.post("/api/rooms/general/read/", {"seq": 1}, format="json").json()["last_read_seq"]
        == 3
    )
    receipts = api(alice).get("/api/rooms/general/receipts/").json()
    assert {r["user"]["username"]: r["seq"] for r in receipts} == {"alice": 4, "bob": 3}


@pytest.mark.parametrize("seq", [-1, "3", None, 1.5, True])
def test_a_bad_read_seq_is_a_400(api, alice, general, seq):
    response = api(alice).post("/api/rooms/general/read/", {"seq": seq}, format="json")
    assert response.status_code == 400


def test_receipts_and_presence_of_a_private_room_are_refused_to_outsiders(api, bob, secret):
    assert api(bob).get("/api/rooms/secret/receipts/").status_code == 404
    assert api(bob).get("/api/rooms/secret/presence/").status_code == 404


# --- schema ---------------------------------------------------------------------------


def test_the_openapi_schema_and_docs_are_served(db):
    schema = APIClient().get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/rooms/{slug}/messages/" in schema.content
    docs = APIClient().get("/api/docs/")
    assert docs.status_code == 200
