"""The front door (contract §0): one include serving everything with
protected metrics, one import for the site-facing API with one meaning of
"after commit" in sync and async, and django_realtime.testing showing a
site's tests what was published, notified and sent."""

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import transaction
from django.test import Client, TestCase
from django.urls import reverse

import django_realtime
from chat import services
from chat.models import Room
from django_realtime import apublish, notify, notify_many, publish
from django_realtime.testing import capture
from django_realtime.topics import history


@pytest.fixture(autouse=True)
def _topics(realtime):
    realtime.TOPICS = {"public": {}}
    history._memory.topics.clear()
    yield
    history._memory.topics.clear()


# --- one import --------------------------------------------------------------------------
def test_the_public_api_is_one_import_with_all():
    assert sorted(django_realtime.__all__) == sorted(
        [
            "__version__",
            "apublish",
            "broadcast_model",
            "html_stream",
            "notify",
            "notify_many",
            "publish",
        ]
    )
    for name in django_realtime.__all__:
        assert getattr(django_realtime, name) is not None
    with pytest.raises(AttributeError):
        django_realtime.lock_users  # noqa: B018 - internals stay inside


# --- after commit, sync and async --------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_publish_inside_a_transaction_waits_for_the_commit_and_outside_returns_the_offset():
    with capture() as captured:
        assert publish("public:a", {"n": 1}) == 1
        with transaction.atomic():
            assert publish("public:a", {"n": 2}) is None
            assert [p.offset for p in captured.publications] == [1]
        with transaction.atomic():
            publish("public:a", {"n": 3})
            transaction.set_rollback(True)
    assert [(p.offset, p.data) for p in captured.publications] == [(1, {"n": 1}), (2, {"n": 2})]


@pytest.mark.django_db(transaction=True)
async def test_apublish_outside_a_transaction_publishes_at_once():
    async with capture() as captured:
        assert await apublish("public:b", {"n": 1}, key="k") == 1
    assert captured.publications[0].key == "k"


@pytest.mark.django_db(transaction=True)
def test_apublish_awaited_from_sync_code_inside_atomic_waits_for_the_commit():
    with capture() as captured:
        with transaction.atomic():
            assert async_to_sync(apublish)("public:c", {"n": 1}) is None
            assert captured.publications == []
        assert [p.data for p in captured.publications] == [{"n": 1}]
        with transaction.atomic():
            async_to_sync(apublish)("public:c", {"n": 2})
            transaction.set_rollback(True)
    assert [p.data for p in captured.publications] == [{"n": 1}]


@pytest.mark.django_db(transaction=True)
def test_notify_returns_the_stored_notification_and_pushes_after_commit(make_user):
    bob, carol = make_user("bob"), make_user("carol")
    with capture() as captured:
        with transaction.atomic():
            stored = notify(recipient=bob, kind="order", data={"item": "tea"})
            assert stored.pk is not None and captured.notifications == []
        many = notify_many(recipients=[bob, carol], kind="news", data={})
    assert [n.pk for n in captured.notifications] == [stored.pk, *(n.pk for n in many)]
    assert {n.recipient_id for n in many} == {bob.pk, carol.pk}


@pytest.mark.django_db(transaction=True)
async def test_capture_sees_a_chat_message_sent_from_async_code(make_user):
    alice = await sync_to_async(make_user)("alice")
    await Room.objects.acreate(slug="lobby", name="Lobby")
    async with capture() as captured:
        await services.message_send_async(
            user=alice, slug="lobby", content="hi", client_id="00000000-0000-4000-8000-000000000001"
        )
    (message,) = captured.messages
    assert (message["room"], message["content"], message["user"]["username"]) == (
        "lobby",
        "hi",
        "alice",
    )


class CaptureInATestCase(TestCase):
    """A site's own TestCase: nothing commits there, so the end of the
    capture block stands for the commit."""

    def test_a_notification_and_a_publication_are_seen(self):
        from django.contrib.auth import get_user_model

        bob = get_user_model().objects.create_user("bob", password="pw")
        with self.settings(REALTIME={"TOPICS": {"public": {}}}), capture() as captured:
            notify(recipient=bob, kind="order", data={"item": "tea"})
            publish("public:orders", {"count": 1})
            self.assertEqual(captured.notifications, [])  # not committed yet
        self.assertEqual([n.kind for n in captured.notifications], ["order"])
        self.assertEqual([p.data for p in captured.publications], [{"count": 1}])


# --- one include -------------------------------------------------------------------------
@pytest.mark.urls("tests.front_door.urls")
@pytest.mark.django_db
def test_the_include_serves_the_probes_rest_streams_and_pages_under_the_prefix(make_user):
    client = Client()
    assert client.get("/rt/healthz").json() == {"status": "ok"}
    assert client.get("/rt/readyz").json()["database"] == "ok"
    assert client.get("/rt/api/rooms/").status_code == 401
    assert client.get("/rt/").status_code == 302  # the pages ask for the site's login
    assert client.get("/rt/assets/client.js").status_code == 200
    assert reverse("chat:api-rooms") == "/rt/api/rooms/"
    assert reverse("notifications:api-notifications") == "/rt/api/notifications/"
    assert reverse("chat:events-topic", args=["public:x"]) == "/rt/events/topics/public:x/"


@pytest.mark.urls("tests.front_door.urls")
@pytest.mark.django_db
def test_metrics_answers_the_bearer_and_staff_only(realtime, make_user):
    url = reverse("realtime:metrics")
    assert url == "/rt/metrics"
    client = Client()
    assert client.get(url).status_code == 404  # no token set, not staff
    assert client.get(url, headers={"Authorization": "Bearer "}).status_code == 404
    realtime.METRICS_TOKEN = "s3cret"
    assert client.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 404
    ok = client.get(url, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and b"realtime_" in ok.content
    client.force_login(make_user("carol"))
    assert client.get(url).status_code == 404
    client.force_login(make_user("admin", is_staff=True))
    assert client.get(url).status_code == 200
