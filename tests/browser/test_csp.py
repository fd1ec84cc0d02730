"""The pages, the API docs and the admin under the Content-Security-Policy
(django_realtime.security), in headless Chromium: every page works and the
browser reports no violation (Chromium logs each as a console error)."""

import pytest

from chat.models import Room

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live, pytest.mark.browser]


@pytest.fixture
def people(make_user):
    Room.objects.create(slug="general", name="General")
    return make_user("alice"), make_user("boss", is_staff=True)


def violations(tab) -> list[str]:
    return [e for e in tab.console_errors if "Content Security Policy" in e]


def test_the_pages_and_api_docs_work_under_the_csp(site, sign_in, people):
    tab = sign_in(site, "alice")
    response = tab.page.goto(f"{site.http}/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    room = tab.open_room("general")
    room.say("under the policy")
    room.page.locator(".msg", has_text="under the policy").wait_for()
    docs = tab.page.goto(f"{site.http}/api/docs/")
    assert "frame-ancestors 'none'" in docs.headers["content-security-policy"]
    tab.page.locator(".swagger-ui .info .title").wait_for()
    assert (tab.errors, tab.console_errors) == ([], [])


def test_the_admin_works_under_the_csp(site, sign_in, people):
    boss = people[1]
    boss.is_superuser = True
    boss.save()
    tab = sign_in(site, boss.username)
    for path in ("/admin/", "/admin/chat/room/", "/admin/chat/room/add/"):
        response = tab.page.goto(f"{site.http}{path}")
        assert response.status == 200, path
        assert "script-src 'self'" in response.headers["content-security-policy"], path
    tab.page.fill("#id_slug", "lobby")
    tab.page.fill("#id_name", "Lobby")
    tab.page.get_by_role("button", name="Save", exact=True).click()
    tab.page.locator(".messagelist .success").wait_for()
    assert Room.objects.filter(slug="lobby").exists()
    assert violations(tab) == [] and tab.errors == []
