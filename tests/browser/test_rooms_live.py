"""The room list (`/`) in headless Chromium follows `public:rooms` (chat/live.py,
docs/topics.md): rooms created through the REST API, renamed and deleted in
an operator's shell show up, change and go without a reload; private rooms
never do.

Every change is made in another process: the daphne serving the page (REST)
or `manage.py shell` (rename, delete), both on the test database and Redis,
so the publication travels as in production. The pytest process itself runs
on the in-memory channel layer: a `Room.save()` here would reach nobody.

Not the admin: the session's daphne caches ContentType ids, which the flush
after each transactional test renumbers, so an admin save there (it writes a
LogEntry) fails with a foreign key error once an earlier test used the admin.
"""

import os
import uuid

import httpx
import pytest

from chat import services
from tests.live.conftest import manage_shell

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live, pytest.mark.browser]

HOSTILE_NAME = '<img src=x onerror=alert(1)> Lounge & "friends"'


@pytest.fixture
def people(make_user):
    alice, bob = make_user("alice"), make_user("bob")
    mod = make_user("mod", is_staff=True)  # staff may publish on `public` over HTTP
    services.room_create(user=bob, slug="general", name="General")
    services.room_create(user=bob, slug="zeta", name="Zeta")
    services.room_create(user=alice, slug="alice-den", name="Alice's den", is_private=True)
    services.room_create(user=bob, slug="bob-secret", name="Bob's secret", is_private=True)
    services.room_join(user=alice, slug="general")
    for text in ("one", "two"):
        services.message_send(user=bob, slug="general", content=text, client_id=str(uuid.uuid4()))
    return alice, bob, mod


def room_list(tab) -> list[tuple[str, str]]:
    """(slug, name) of each room listed, top to bottom."""
    items = tab.page.locator("#room-list .room-item")
    return [
        (item.get_attribute("data-slug"), item.locator(".room-name").text_content())
        for item in items.all()
    ]


def wait_live(tab) -> None:
    # A selector, not wait_for_function: the CSP forbids eval.
    tab.page.locator("#room-list[data-live='live']").wait_for(state="attached")


def item(tab, slug: str):
    return tab.page.locator(f"#room-list .room-item[data-slug='{slug}']")


def api(site, token: str) -> httpx.Client:
    return httpx.Client(base_url=site.http, headers={"Authorization": f"Token {token}"}, timeout=10)


def operator(code: str) -> None:
    """Change rooms from an operator's shell: another process on the test
    database and Redis, so what it publishes reaches the daphne serving the
    pages (as a worker's or a management command's would)."""
    manage_shell(
        f"from chat.models import Room; {code}", redis_url=os.environ["REALTIME_TEST_REDIS_URL"]
    )


def rename(slug: str, name: str) -> None:
    operator(f"room = Room.objects.get(slug={slug!r}); room.name = {name!r}; room.save()")


def delete(slug: str) -> None:
    operator(f"Room.objects.get(slug={slug!r}).delete()")


def test_the_room_list_is_rendered_on_first_load_as_before(site, sign_in, people):
    """Public rooms and the user's private ones, in slug order, linking to
    their pages, with the unread count; a private room of others' is absent."""
    tab = sign_in(site, "alice")
    wait_live(tab)
    assert room_list(tab) == [
        ("alice-den", "Alice's den"),
        ("general", "General"),
        ("zeta", "Zeta"),
    ]
    assert item(tab, "general").locator("a").get_attribute("href") == "/rooms/general/"
    assert item(tab, "general").locator(".badge").text_content() == "2"
    assert "has-unread" in item(tab, "general").get_attribute("class")
    assert item(tab, "alice-den").locator(".tag").text_content() == "private"
    assert item(tab, "zeta").locator(".badge").count() == 0
    # The reconcile with GET api/rooms/ after subscribing changes nothing.
    assert room_list(tab) == [
        ("alice-den", "Alice's den"),
        ("general", "General"),
        ("zeta", "Zeta"),
    ]
    assert item(tab, "general").locator(".badge").text_content() == "2"
    item(tab, "general").locator("a").click()
    tab.wait_online()
    assert (tab.errors, tab.console_errors) == ([], [])


def test_rooms_created_renamed_and_deleted_elsewhere_show_without_a_reload(
    site, sign_in, people, token_for
):
    _, bob, mod = people
    tab = sign_in(site, "alice")
    wait_live(tab)
    navigations = []
    tab.page.on("framenavigated", lambda frame: navigations.append(frame.url))

    with api(site, token_for(bob)) as bob_api:
        # Created: a private room first (never published), then a public one.
        hidden = bob_api.post(
            "/api/rooms/", json={"slug": "hideout", "name": "Hideout", "is_private": True}
        )
        assert hidden.status_code == 201, hidden.text
        made = bob_api.post(
            "/api/rooms/", json={"slug": "lounge", "name": "Lounge", "is_private": False}
        )
        assert made.status_code == 201, made.text
    item(tab, "lounge").wait_for()
    assert room_list(tab) == [
        ("alice-den", "Alice's den"),
        ("general", "General"),
        ("lounge", "Lounge"),
        ("zeta", "Zeta"),
    ]
    lounge = item(tab, "lounge")
    assert lounge.locator("a").get_attribute("href") == "/rooms/lounge/"
    assert lounge.locator(".room-slug").text_content() == "#lounge"
    assert lounge.locator(".badge, .tag").count() == 0
    assert "has-unread" not in lounge.get_attribute("class")

    # The same change twice (as a replay delivers it) is harmless: staff may
    # publish on `public` over HTTP, so the page gets it twice for real.
    same = {
        "data": {"event": "created", "room": {"slug": "lounge", "name": "Lounge"}},
        "key": "lounge",
    }
    with api(site, token_for(mod)) as mod_api:
        for _ in range(2):
            published = mod_api.post("/api/topics/public:rooms/publish/", json=same)
            assert published.status_code == 201, published.text

    # Renamed, to a name that is markup: shown as text.
    rename("lounge", HOSTILE_NAME)
    lounge.locator(".room-name", has_text=HOSTILE_NAME).wait_for()
    assert lounge.count() == 1, "the duplicate publications added nothing"
    assert room_list(tab) == [
        ("alice-den", "Alice's den"),
        ("general", "General"),
        ("lounge", HOSTILE_NAME),
        ("zeta", "Zeta"),
    ]
    assert tab.page.locator("#room-list img").count() == 0

    # Deleted: gone; the same deletion again changes nothing.
    delete("lounge")
    lounge.wait_for(state="detached")
    gone = {
        "data": {"event": "deleted", "room": {"slug": "lounge", "name": HOSTILE_NAME}},
        "key": "lounge",
    }
    with api(site, token_for(mod)) as mod_api:
        assert mod_api.post("/api/topics/public:rooms/publish/", json=gone).status_code == 201
    # A rename of another room is the marker that the repeat was applied.
    rename("zeta", "Zeta, renamed")
    item(tab, "zeta").locator(".room-name", has_text="Zeta, renamed").wait_for()
    assert room_list(tab) == [
        ("alice-den", "Alice's den"),
        ("general", "General"),
        ("zeta", "Zeta, renamed"),
    ]
    assert item(tab, "hideout").count() == 0, "a private room is never published"
    assert item(tab, "general").locator(".badge").text_content() == "2", "unread count kept"
    assert navigations == [], "no reload"
    tab.screenshot("rooms-live")

    # A reload renders what the live list showed.
    tab.page.reload()
    wait_live(tab)
    assert room_list(tab) == [
        ("alice-den", "Alice's den"),
        ("general", "General"),
        ("zeta", "Zeta, renamed"),
    ]
    assert (tab.errors, tab.console_errors) == ([], []), "no dialog, no CSP violation, no error"


def test_the_last_room_deleted_and_a_first_one_created_keep_the_empty_line_right(
    site, sign_in, make_user, token_for
):
    bob = make_user("bob")
    make_user("alice")
    services.room_create(user=bob, slug="only", name="Only")
    tab = sign_in(site, "alice")
    wait_live(tab)
    empty = tab.page.locator("#room-list .room-empty")
    assert empty.count() == 0
    delete("only")
    empty.wait_for()
    assert room_list(tab) == []
    with api(site, token_for(bob)) as bob_api:
        made = bob_api.post("/api/rooms/", json={"slug": "first", "name": "First"})
        assert made.status_code == 201, made.text
    item(tab, "first").wait_for()
    assert empty.count() == 0
    assert room_list(tab) == [("first", "First")]
    assert (tab.errors, tab.console_errors) == ([], [])
