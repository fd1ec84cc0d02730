"""The room page's Notes panel in headless Chromium: two people typing into
the room's shared `notes` document at the same time end with the same text,
which REST serves too; the page's strict CSP holds (no errors)."""

import re

import pytest
from playwright.sync_api import expect

from chat.models import Room

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live, pytest.mark.browser]


@pytest.fixture
def people(make_user):
    Room.objects.create(slug="general", name="General")
    return make_user("alice"), make_user("bob")


def test_two_people_typing_into_the_notes_at_once_end_with_the_same_text(site, sign_in, people):
    alice = sign_in(site, "alice").open_room("general")
    bob = sign_in(site, "bob").open_room("general")
    box_a, box_b = (tab.page.locator("#notes-text") for tab in (alice, bob))
    for box in (box_a, box_b):
        box.wait_for()
        # Enabled once the document has synced with the server. (No
        # wait_for_function: it evaluates a string, which the CSP forbids.)
        expect(box).to_be_enabled()
    # Both type at the same time: the keystrokes interleave on the server.
    typed_a, typed_b = "alice was here. ", "bob too! "
    for i in range(max(len(typed_a), len(typed_b))):
        if i < len(typed_a):
            box_a.press(typed_a[i])
        if i < len(typed_b):
            box_b.press(typed_b[i])
    # Each ends with every keystroke of both (where they land depends on
    # how the two carets moved), and with the same text.
    total = len(typed_a) + len(typed_b)
    for box in (box_a, box_b):
        expect(box).to_have_value(re.compile(f"^.{{{total}}}$", re.DOTALL), timeout=15_000)
    text = box_a.input_value()
    assert text == box_b.input_value()
    assert sorted(text.replace(" ", "")) == sorted((typed_a + typed_b).replace(" ", ""))
    response = alice.page.request.get(f"{site.http}/api/rooms/general/docs/notes/")
    assert response.status == 200
    assert response.json()["text"] == text
    alice.screenshot("room-notes")
    for tab in (alice, bob):
        assert (tab.errors, tab.console_errors) == ([], [])
