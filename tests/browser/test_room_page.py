"""The room page in headless Chromium: two people talking, typing and present;
a moderator's deletion; hostile content shown as text."""

import os

import pytest

from chat import services
from chat.models import Message, Room
from tests.live.conftest import manage_shell

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live, pytest.mark.browser]


@pytest.fixture
def people(make_user):
    Room.objects.create(slug="general", name="General")
    return make_user("alice"), make_user("bob")


def test_two_people_see_each_others_messages_typing_and_presence(site, sign_in, people):
    alice = sign_in(site, "alice").open_room("general")
    bob = sign_in(site, "bob").open_room("general")
    for tab in (alice, bob):
        tab.page.locator("#presence .person-name", has_text="alice").wait_for()
        tab.page.locator("#presence .person-name", has_text="bob").wait_for()
    alice.say("hello bob")
    bob.wait_for_text("hello bob")
    bob.page.locator("#composer-input").press_sequentially("hi al", delay=30)
    alice.page.locator("#typing", has_text="bob is typing").wait_for()
    bob.page.locator("#composer-input").press("Enter")
    alice.wait_for_text("hi al")
    assert alice.stored() == bob.stored() == ["hello bob", "hi al"]
    alice.screenshot("room-two-people")
    for tab in (alice, bob):
        assert (tab.errors, tab.console_errors) == ([], [])


def test_a_message_a_moderator_hides_in_the_admin_disappears_from_open_pages(
    site, sign_in, people, make_user
):
    """The moderator uses the real admin in a third browser: select the
    message, pick "Hide selected messages", Go. The open pages drop it at once."""
    mod = make_user("mod", is_staff=True)
    mod.is_superuser = True
    mod.save()
    alice = sign_in(site, "alice").open_room("general")
    bob = sign_in(site, "bob").open_room("general")
    bob.say("buy cheap pills")
    bob.say("oops, wrong room")
    alice.wait_for_text("oops, wrong room")
    bad = services_message("buy cheap pills")

    admin = sign_in(site, "mod")
    admin.page.goto(f"{site.http}/admin/chat/message/?q=pills")
    admin.page.check(f'input[name="_selected_action"][value="{bad.pk}"]')
    admin.page.select_option('select[name="action"]', "hide_selected")
    admin.page.fill('input[name="reason"]', "spam")
    admin.page.get_by_role("button", name="Go").click()
    admin.page.locator(".messagelist", has_text="Hid 1 message").wait_for()

    for tab in (alice, bob):
        tab.page.locator(f'#messages .msg[data-id="{bad.pk}"]').wait_for(state="detached")
        assert tab.stored() == ["oops, wrong room"]
    alice.page.reload()
    alice.wait_online()
    assert alice.stored() == ["oops, wrong room"], "gone from the history too"
    alice.screenshot("room-after-moderation")
    for tab in (alice, bob, admin):
        assert (tab.errors, tab.console_errors) == ([], [])


def services_message(content):
    return Message.objects.get(content=content)


def moderate(service, username, reason):
    """A moderator acts from another process (an operator's shell) on the same
    database and Redis, so the daphne serving the pages hears of it."""
    manage_shell(
        "from django.contrib.auth import get_user_model as U; from chat import services;"
        "from chat.models import Room;"
        f"services.{service}(moderator=U().objects.get(username='mod'),"
        f" room=Room.objects.get(slug='general'), user=U().objects.get(username={username!r}),"
        f" reason={reason!r})",
        redis_url=os.environ["REALTIME_TEST_REDIS_URL"],
    )


def test_a_mute_and_a_ban_show_on_the_open_pages_at_once(site, sign_in, people, make_user):
    """Muted: the next message is marked "Not sent" with the reason. Banned: the
    page says so, stops taking input and empties its presence list, and the
    others see the banned user leave."""
    make_user("mod", is_staff=True)
    alice = sign_in(site, "alice").open_room("general")
    bob = sign_in(site, "bob").open_room("general")
    alice.page.locator("#presence .person-name", has_text="bob").wait_for()

    moderate("member_mute", "bob", "cool down")
    bob.say("can I still talk?")
    bob.page.locator(".msg.failed .msg-status", has_text="Not sent").wait_for()
    assert "muted" in bob.page.locator(".msg.failed .msg-status").text_content()
    assert Message.objects.filter(content="can I still talk?").count() == 0

    moderate("member_ban", "alice", "flooding")
    alice.page.locator(
        "#room-alert", has_text="You were removed from this room: flooding"
    ).wait_for()
    assert alice.page.locator("#composer-input").is_disabled()
    assert alice.page.locator("#presence .person").count() == 0
    bob.page.locator("#presence .person-name", has_text="alice").wait_for(state="detached")
    alice.screenshot("room-banned")
    assert (alice.errors, alice.console_errors, bob.errors, bob.console_errors) == ([], [], [], [])
    response = alice.page.reload()
    assert response.status == 403
    assert "banned" in alice.page.locator(".errors").text_content()


HOSTILE = [
    "<img src=x onerror=alert(1)>",
    "<script>alert(2)</script>",
    '"><svg onload=alert(3)>',
    '<a href="javascript:alert(4)">click</a> & &amp; &lt;b&gt;',
]


def test_hostile_content_is_shown_as_text_live_and_in_history(site, sign_in, people):
    """Nothing runs (no dialog, no element is created from it); the text reads
    exactly as typed, live and after a reload (the server-rendered history).
    A room name is text too."""
    alice, _ = people
    services.room_create(user=alice, slug="xss", name="<img src=x onerror=alert(5)> room")
    alice_tab = sign_in(site, "alice").open_room("xss")
    bob_tab = sign_in(site, "bob").open_room("xss")
    for content in HOSTILE:
        bob_tab.say(content)
    alice_tab.wait_for_text(HOSTILE[-1])
    for tab in (alice_tab, bob_tab):
        assert tab.stored() == HOSTILE
    alice_tab.page.reload()
    alice_tab.wait_online()
    assert alice_tab.stored() == HOSTILE
    page = alice_tab.page
    assert page.locator("#messages img, #messages script, #messages svg, #messages a").count() == 0
    assert page.locator("h1").first.text_content() == "<img src=x onerror=alert(5)> room"
    assert page.evaluate("document.title").startswith("#xss")
    alice_tab.screenshot("room-hostile-content")
    for tab in (alice_tab, bob_tab):
        assert (tab.errors, tab.console_errors) == ([], []), "no dialog, no script error"
