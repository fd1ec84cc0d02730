"""The browser client across a server restart, in headless Chromium: the page
says it is offline, reconnects by itself, shows what was said meanwhile once,
and delivers what was typed meanwhile once."""

import signal
import uuid

import httpx
import pytest

from chat.models import Message, Room
from tests.live.conftest import manage_shell

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live, pytest.mark.browser]


@pytest.fixture
def people(make_user, token_for):
    Room.objects.create(slug="general", name="General")
    alice, bob = make_user("alice"), make_user("bob")
    return {"alice": alice, "bob": bob, "bob_token": token_for(bob)}


def post(server, token, content):
    response = httpx.post(
        f"{server.http}/api/rooms/general/messages/",
        json={"content": content, "client_id": str(uuid.uuid4())},
        headers={"Authorization": f"Token {token}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text


def test_a_restarted_server_is_shown_and_the_page_catches_up_once(
    restartable, site, sign_in, people, make_user
):
    """Killed (SIGKILL) and started again on the same port: the banner says so,
    the page reconnects on its own, and messages posted meanwhile (through
    another server) appear once each, in order, followed by live ones; one a
    moderator hid meanwhile is gone."""
    make_user("mod", is_staff=True)
    tab = sign_in(restartable, "alice").open_room("general")
    post(site, people["bob_token"], "before the crash")
    post(site, people["bob_token"], "hidden while you were away")
    tab.wait_for_text("hidden while you were away")

    restartable.stop(signal.SIGKILL)
    banner = tab.page.locator("#conn")
    banner.wait_for(state="visible")
    tab.page.locator("#conn[data-state='reconnecting'], #conn[data-state='offline']").wait_for(
        state="attached"
    )
    assert "Reconnecting" in banner.text_content()
    tab.screenshot("room-reconnecting")
    post(site, people["bob_token"], "while you were away 1")
    post(site, people["bob_token"], "while you were away 2")
    manage_shell(
        "from django.contrib.auth import get_user_model as U; from chat import services;"
        "from chat.models import Message;"
        "services.message_delete(moderator=U().objects.get(username='mod'),"
        " message_id=Message.objects.get(content='hidden while you were away').pk)",
        redis_url=restartable.proc.redis_url,
    )

    restartable.start()
    tab.wait_online()
    tab.wait_for_text("while you were away 2")
    post(site, people["bob_token"], "after the restart")
    tab.wait_for_text("after the restart")
    tab.page.locator(".msg-body", has_text="hidden while you were away").wait_for(state="detached")
    assert tab.stored() == [
        "before the crash",
        "while you were away 1",
        "while you were away 2",
        "after the restart",
    ]
    assert banner.is_hidden()
    assert tab.errors == [] and tab.network_errors_only(), tab.console_errors


def test_a_message_typed_while_the_server_is_down_is_delivered_once(restartable, sign_in, people):
    """Stopped gracefully (SIGTERM: a drain with 1012), then started again: the
    message waits as "Sending…", goes out after the reconnect with its
    client_id, and is stored and shown exactly once."""
    tab = sign_in(restartable, "alice").open_room("general")
    restartable.stop(signal.SIGTERM)
    tab.page.locator("#conn:not([data-state='online'])").wait_for(state="attached")
    tab.say("written offline")
    assert tab.pending() == ["written offline"]
    tab.page.locator("#conn-text", has_text="1 message will be sent").wait_for(timeout=30_000)
    tab.screenshot("room-offline-pending")

    restartable.start()
    tab.wait_online()
    tab.wait_for_text("written offline", timeout=30_000)
    tab.page.locator("#messages .msg.pending").wait_for(state="detached")
    assert tab.stored() == ["written offline"]
    assert Message.objects.filter(content="written offline").count() == 1
    outbox = tab.page.evaluate(f"localStorage.getItem('realtime.outbox.{people['alice'].pk}')")
    assert outbox is None, "the ack emptied the outbox"
    tab.page.reload()
    tab.wait_online()
    assert tab.stored() == ["written offline"] and tab.pending() == []
    assert tab.errors == [] and tab.network_errors_only(), tab.console_errors
