"""
Django's own session rules on the sockets (contract §2), over real sockets:
a SECRET_KEY rotation with the old key in SECRET_KEY_FALLBACKS keeps a
session's socket open across its re-checks and leaves the site's session as
it was; a session no key verifies is refused with 4401 and never flushed by
the socket. Three daphne processes on one database: one under the old key,
one rotated (new key, the old as a fallback), one with the new key only.
"""

import asyncio
import re

import httpx
import pytest
import websockets
from django.contrib.auth.hashers import make_password
from django.contrib.sessions.models import Session

from chat.models import Room

from .conftest import ServerProcess, Ws, manage_shell

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

OLD, NEW = "rotated-out-" + "o" * 48, "rotated-in-" + "n" * 48


@pytest.fixture(scope="module")
def sites(django_db_setup, redis_url):
    often = {"SESSION_RECHECK_SECONDS": "1", "GROUP_REFRESH_SECONDS": "1"}
    envs = {
        "old": {"SECRET_KEY": OLD},
        "rotated": {"SECRET_KEY": NEW, "SECRET_KEY_FALLBACKS": OLD, **often},
        "new_only": {"SECRET_KEY": NEW, **often},
    }
    started = {name: ServerProcess(redis_url=redis_url, env=env) for name, env in envs.items()}
    try:
        for proc in started.values():
            proc.start()
        yield started
    finally:
        for proc in started.values():
            if proc.proc is not None:
                proc.stop()


@pytest.fixture
def alice(make_user):
    Room.objects.create(slug="general", name="General")
    return make_user("alice")


def login(server, username: str = "alice") -> str:
    """The session key a browser gets from the login form of `server`."""
    with httpx.Client(base_url=server.http, timeout=10) as client:
        page = client.get("/accounts/login/")
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        done = client.post(
            "/accounts/login/",
            data={"username": username, "password": "pw", "csrfmiddlewaretoken": csrf},
        )
        assert done.status_code == 302
        return client.cookies["sessionid"]


async def page(server, key: str) -> httpx.Response:
    """The site's index with this session cookie (a login redirect when logged out)."""
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as client:
        client.cookies.set("sessionid", key)
        return await client.get("/")


async def socket(server, key: str) -> Ws:
    """A page's socket: the session cookie and the page's own Origin."""
    conn = await websockets.connect(
        server.ws,
        origin=server.http,
        additional_headers={"Cookie": f"sessionid={key}"},
        open_timeout=10,
    )
    return Ws(conn)


async def document_socket(server, key: str) -> Ws:
    """A shared document's editor on this session cookie, synced once."""
    conn = await websockets.connect(
        f"{server.ws}docs/general/notes",
        origin=server.http,
        additional_headers={"Cookie": f"sessionid={key}"},
        open_timeout=10,
    )
    await conn.send(b"\x00\x00\x01\x00")  # sync step 1, an empty state vector
    await asyncio.wait_for(conn.recv(), 10)  # the server's step 2: it is open
    return Ws(conn)


async def close_code(ws: Ws, timeout: float = 10) -> tuple[int | None, str]:
    try:
        while True:
            await asyncio.wait_for(ws.conn.recv(), timeout)
    except websockets.ConnectionClosed as closed:
        return (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (None, "")


async def session_exists(key: str) -> bool:
    return await Session.objects.filter(session_key=key).aexists()


async def test_a_session_from_before_a_key_rotation_keeps_its_socket_and_the_site(
    sites, alice, redis_url
):
    key = await asyncio.to_thread(login, sites["old"])
    ws = await socket(sites["rotated"], key)
    assert (await ws.join("general"))["type"] == "joined"
    # Re-checks: every second, and one a save of the user asks for.
    await asyncio.sleep(3)
    await asyncio.to_thread(
        manage_shell,
        "from django.contrib.auth import get_user_model; "
        "u = get_user_model().objects.get(username='alice'); u.first_name = 'Al'; u.save()",
        redis_url=redis_url,
    )
    await asyncio.sleep(2)
    assert (await ws.request({"type": "ping"}, "pong"))["type"] == "pong"
    await ws.post("general", "still here")
    assert await session_exists(key)  # the socket flushed and re-keyed nothing

    # The site accepts the session too, and (Django's own rule) gives it a
    # new key under the new SECRET_KEY, in the page's cookie.
    response = await page(sites["rotated"], key)
    assert response.status_code == 200
    renewed = response.cookies["sessionid"]
    assert renewed != key and not await session_exists(key)
    # The socket on the old key is told to reconnect at its next re-check
    # (not 4401, which would stop a browser that is still logged in); the
    # page's next socket opens on the new key.
    assert await close_code(ws) == (1012, "session changed: reconnect")
    again = await socket(sites["rotated"], renewed)
    assert (await again.join("general"))["type"] == "joined"
    await again.close()


async def test_a_session_no_key_verifies_is_refused_and_not_flushed(sites, alice):
    key = await asyncio.to_thread(login, sites["old"])
    ws = await socket(sites["new_only"], key)
    assert await close_code(ws) == (4401, "")
    assert await session_exists(key)
    # What the user sees: that site cannot read the session either (logged
    # out there, the row left alone); the site under the old key still can.
    assert (await page(sites["new_only"], key)).status_code == 302
    assert (await page(sites["old"], key)).status_code == 200
    assert await session_exists(key)


async def test_a_session_django_would_flush_for_a_page_is_refused_and_left_to_the_site(
    sites, alice
):
    """A password set behind Django's back: the session's auth hash is stale.
    The socket refuses it without touching it; Django flushes it at the
    site's next page."""
    key = await asyncio.to_thread(login, sites["rotated"])
    await type(alice).objects.filter(pk=alice.pk).aupdate(password=make_password("new"))
    ws = await socket(sites["rotated"], key)
    assert await close_code(ws) == (4401, "")
    assert await session_exists(key)
    assert (await page(sites["rotated"], key)).status_code == 302
    assert not await session_exists(key)


async def test_a_document_socket_on_a_session_django_re_keys_is_told_to_reconnect(
    sites, alice, redis_url
):
    """The shared documents' socket follows the same rule as /ws/: once the
    site gives the session a new key, its next re-check (here one a save of
    the user asks for) closes it with 1012 (reconnect), not 4401."""
    key = await asyncio.to_thread(login, sites["old"])
    rotated = sites["rotated"]
    ws = await document_socket(rotated, key)
    assert (await page(rotated, key)).status_code == 200  # Django re-keys the session
    await asyncio.to_thread(
        manage_shell,
        "from django.contrib.auth import get_user_model; "
        "u = get_user_model().objects.get(username='alice'); u.first_name = 'Al'; u.save()",
        redis_url=redis_url,
    )
    assert await close_code(ws) == (1012, "session changed: reconnect")


async def test_a_document_socket_checks_its_session_again_with_nobody_asking(
    sites, alice, make_user
):
    """With no layer event to ask it, the document socket re-checks its
    session every SESSION_RECHECK_SECONDS (here 1 s), as /ws/ does: one the
    site re-keyed closes it with 1012, one that no longer authenticates (a
    password set behind Django's back, no signal sent) with 4401."""
    rotated = sites["rotated"]
    bob = await asyncio.to_thread(make_user, "bob")
    rekeyed = await asyncio.to_thread(login, sites["old"])
    moved = await document_socket(rotated, rekeyed)
    ended = await document_socket(rotated, await asyncio.to_thread(login, rotated, "bob"))
    assert (await page(rotated, rekeyed)).status_code == 200  # Django re-keys the session
    await type(bob).objects.filter(pk=bob.pk).aupdate(password=make_password("new"))
    assert await close_code(moved) == (1012, "session changed: reconnect")
    assert await close_code(ended) == (4401, "session ended")
