"""
Last-seen times (the service, the admin) and the REST presence endpoint on
the in-process store.
"""

from datetime import UTC, datetime, timedelta

import pytest
from asgiref.sync import sync_to_async
from django.contrib import admin

from chat import selectors as chat_selectors
from chat.models import Membership
from presence import selectors, services
from presence.backends import get_store
from presence.models import UserPresence

pytestmark = pytest.mark.django_db


def test_last_seen_is_written_then_moved_and_unknown_users_are_skipped(alice, bob):
    first = datetime(2026, 1, 1, tzinfo=UTC)
    assert services.last_seen_record(user_ids=[alice.pk, 999_999], at=first) == 1
    assert selectors.last_seen_by_user(user_ids=[alice.pk, bob.pk]) == {alice.pk: first}
    later = first + timedelta(hours=1)
    services.last_seen_record(user_ids=[alice.pk, bob.pk], at=later)
    assert selectors.last_seen_by_user(user_ids=[alice.pk, bob.pk]) == {
        alice.pk: later,
        bob.pk: later,
    }
    assert UserPresence.objects.count() == 2


def test_last_seen_times_are_browsable_in_the_admin(alice, make_user, client):
    assert admin.site.is_registered(UserPresence)
    services.last_seen_record(user_ids=[alice.pk])
    staff = make_user("staff", is_staff=True)
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    page = client.get("/admin/presence/userpresence/?q=alice")
    assert page.status_code == 200
    assert "alice" in page.content.decode()


@pytest.mark.django_db(transaction=True)
async def test_rest_presence_reads_the_store_and_can_add_absent_members(
    api, alice, bob, carol, general
):
    store = get_store()
    await store.enter(
        room_id=general.pk,
        room_slug="general",
        user_id=bob.pk,
        username="bob",
        channel="rest-test",
        status="away",
    )
    try:
        for user in (alice, bob, carol):
            await Membership.objects.acreate(room=general, user=user)
        seen = datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC)
        await sync_to_async(services.last_seen_record)(user_ids=[carol.pk], at=seen)
        client = api(alice)

        response = await sync_to_async(client.get)("/api/rooms/general/presence/")
        assert response.status_code == 200
        assert response.json() == [{"user": {"id": bob.pk, "username": "bob"}, "status": "away"}]

        response = await sync_to_async(client.get)("/api/rooms/general/presence/?offline=1")
        assert response.json() == [
            {"user": {"id": bob.pk, "username": "bob"}, "status": "away"},
            {
                "user": {"id": carol.pk, "username": "carol"},
                "status": "offline",
                "last_seen_at": "2026-02-03T04:05:06Z",
            },
            {
                "user": {"id": alice.pk, "username": "alice"},
                "status": "offline",
                "last_seen_at": None,
            },
        ]
    finally:
        await store.disconnect(user_id=bob.pk, channel="rest-test")


def test_absent_members_are_read_in_one_query(general, alice, bob, django_assert_num_queries):
    for user in (alice, bob):
        Membership.objects.create(room=general, user=user)
    with django_assert_num_queries(1):
        rows = chat_selectors.room_members_offline(
            room_id=general.pk, present_user_ids=[], limit=100
        )
    assert len(rows) == 2


@pytest.mark.django_db(transaction=True)
async def test_a_storm_of_departures_is_written_in_a_few_batches(django_user_model, monkeypatch):
    """Every user that goes offline gets a last-seen time, written one batch
    at a time: users leaving while a write is under way go in the next one,
    not in a write each."""
    import asyncio

    from presence import transitions

    users = await django_user_model.objects.abulk_create(
        [django_user_model(username=f"u{n}") for n in range(40)]
    )
    writes = []
    record = services.last_seen_record

    def counted(**kwargs):
        writes.append(sorted(kwargs["user_ids"]))
        return record(**kwargs)

    monkeypatch.setattr(services, "last_seen_record", counted)
    for user in users:  # each a departure, as every consumer's disconnect reports it
        await transitions.record_last_seen([user.pk])
    for _ in range(200):
        await asyncio.sleep(0.05)
        if await UserPresence.objects.filter(last_seen_at__isnull=False).acount() == 40:
            break
    assert await UserPresence.objects.filter(last_seen_at__isnull=False).acount() == 40
    assert sorted(pk for batch in writes for pk in batch) == sorted(u.pk for u in users)
    assert len(writes) <= 3, writes  # the first at once, the rest together behind it


class WritesRecorded:
    """A site's router: presence writes to 'default', each asked recorded."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def db_for_write(self, model, **hints):
        self.asked.append(model._meta.label)
        return "default"


def test_last_seen_goes_where_the_sites_database_routers_send_presence(alice, settings):
    routed = WritesRecorded()
    settings.DATABASE_ROUTERS = [routed]
    assert services.last_seen_record(user_ids=[alice.pk]) == 1
    assert "presence.UserPresence" in routed.asked
    assert UserPresence.objects.filter(user=alice).exists()
