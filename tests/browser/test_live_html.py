"""The live board (`/live/`, project.live) in headless Chromium with stock
Turbo 8 and stock htmx 2 + htmx-ext-sse 2 from npm (contract §10): no script
of the page's own. Every change is made in another process (`manage.py
shell`) on the test database and Redis, as an operator or a worker would.
"""

import os

import pytest
from django.contrib.auth.models import Permission

from project.models import Task
from tests.browser.conftest import Restartable
from tests.live.conftest import manage_shell

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live, pytest.mark.browser]

SOON_MS = 2_000  # a fragment published from a shell is on the page by then
RECONNECT_MS = 20_000  # EventSource's retry (3 s) after the server is back


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    """One daphne for the module; a test may stop and start it."""
    with django_db_blocker.unblock():
        proc = Restartable()
    yield proc
    proc.proc.stop()


@pytest.fixture
def people(make_user):
    watch = Permission.objects.get(codename="view_task")
    alice, bob = make_user("alice"), make_user("bob")
    for user in (alice, bob):
        user.user_permissions.add(watch)
    carol = make_user("carol")  # may not follow the board live
    Task.objects.create(title="rendered", owner=alice)
    return alice, bob, carol


def shell(code: str) -> None:
    manage_shell(
        "from project.models import Task\n"
        "from django.contrib.auth.models import User\n"
        "from django_realtime import html_stream\n"
        "alice, bob = User.objects.get(username='alice'), User.objects.get(username='bob')\n"
        + code,
        redis_url=os.environ["REALTIME_TEST_REDIS_URL"],
    )


def open_board(tab, client="turbo"):
    """The board, once its stream has answered."""
    query = "?client=htmx" if client == "htmx" else ""
    with tab.page.expect_response(lambda r: "/events/topics/live:tasks/" in r.url) as answer:
        tab.page.goto(f"{tab.base}/live/{query}")
    return answer.value.status


def titles(tab) -> list[str]:
    return [t.strip() for t in tab.page.locator("#tasks li").all_text_contents()]


def wait_titles(tab, expected: list[str], timeout: float = SOON_MS) -> None:
    tab.page.locator("#tasks li").nth(len(expected) - 1).wait_for(timeout=timeout)
    tab.page.wait_for_timeout(300)  # anything more (a duplicate) would be here by now
    assert titles(tab) == expected


@pytest.mark.parametrize("client", ["turbo", "htmx"])
def test_fragments_from_another_process_appear_at_once_in_order(server, sign_in, people, client):
    tab = sign_in(server, "alice")
    assert open_board(tab, client) == 200
    shell("for n in range(3): Task.objects.create(title=f'fresh {n}', owner=alice)")
    wait_titles(tab, ["rendered", "fresh 0", "fresh 1", "fresh 2"])
    shell(
        "t = Task.objects.get(title='fresh 1'); t.title = 'renamed'; t.save()\n"
        "Task.objects.get(title='fresh 0').delete()"
    )
    tab.page.locator("#tasks li", has_text="fresh 0").wait_for(state="detached", timeout=SOON_MS)
    assert titles(tab) == ["rendered", "renamed", "fresh 2"]
    assert tab.errors == []


@pytest.mark.parametrize("client", ["turbo", "htmx"])
def test_fragments_missed_while_the_server_was_down_are_applied_once_in_order(
    server, sign_in, people, client
):
    tab = sign_in(server, "alice")
    open_board(tab, client)
    shell("Task.objects.create(title='live', owner=alice)")
    wait_titles(tab, ["rendered", "live"])
    server.stop()
    shell(
        "for n in range(3): Task.objects.create(title=f'missed {n}', owner=alice)\n"
        "Task.objects.get(title='live').delete()"
    )
    server.start()
    wait_titles(tab, ["rendered", "missed 0", "missed 1", "missed 2"], timeout=RECONNECT_MS)


def test_a_fragment_between_render_and_connect_is_applied_none_from_before(server, sign_in, people):
    tab = sign_in(server, "alice")
    held = []
    tab.page.route("**/events/topics/**", lambda route: held.append(route))  # it waits
    tab.page.goto(f"{tab.base}/live/")
    tab.page.locator("#tasks li").first.wait_for()
    shell("Task.objects.create(title='after render', owner=alice)")
    assert titles(tab) == ["rendered"]
    for route in held:
        route.continue_()
    wait_titles(tab, ["rendered", "after render"])


def test_refused_users_keep_the_page_as_rendered_and_objects_reach_only_who_may_see_them(
    server, sign_in, people
):
    alice, bob = sign_in(server, "alice"), sign_in(server, "bob")
    carol = sign_in(server, "carol")
    for tab in (alice, bob):
        assert open_board(tab) == 200
    assert open_board(carol) == 404
    shell(
        "Task.objects.create(title='bobs', owner=bob)\n"
        "from django.contrib.auth.models import User\n"
        "Task.objects.create(title='carols', owner=User.objects.get(username='carol'))"
    )
    wait_titles(bob, ["bobs"])
    assert titles(alice) == ["rendered"]
    assert titles(carol) == []
    # Given to alice: it leaves bob's board and enters hers.
    shell("t = Task.objects.get(title='bobs'); t.owner = alice; t.save()")
    wait_titles(alice, ["rendered", "bobs"])
    bob.page.locator("#tasks li").first.wait_for(state="detached", timeout=SOON_MS)
    assert titles(bob) == [] and titles(carol) == []


def test_a_refresh_morphs_the_page_keeping_scroll_and_form_input(server, sign_in, people):
    shell("for n in range(40): Task.objects.create(title=f'row {n}', owner=alice)")
    tab = sign_in(server, "alice")
    open_board(tab)
    box = tab.page.locator("#id_title")
    box.scroll_into_view_if_needed()
    box.fill("half-typed")
    scrolled = tab.page.evaluate("window.scrollY")
    assert scrolled > 0
    # A bulk change sends no signals: the shell asks every board to refresh.
    shell(
        "Task.objects.filter(title__startswith='row').update(title='bulk')\n"
        "html_stream('live:tasks').refresh()"
    )
    tab.page.locator("#tasks li", has_text="row 0").wait_for(state="detached", timeout=SOON_MS)
    assert titles(tab).count("bulk") == 40
    assert box.input_value() == "half-typed"
    assert tab.page.evaluate("window.scrollY") == scrolled
