"""
Session end (contract §2) over real sockets, with two server processes on
one Redis: when the credentials a connection was opened with stop being
valid, its WebSockets close with 4401 `session ended` on both processes
within 2 s, and its SSE streams end; the same user's connections on other
credentials stay.
"""

import asyncio
import re
import time

import httpx
import psycopg
import pytest
import websockets

from chat.models import Room

from .conftest import Ws, database_url, manage_shell

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

CLOSE_WITHIN = 2.0


@pytest.fixture
def alice(make_user, token_for):
    Room.objects.create(slug="general", name="General")
    user = make_user("alice", password="correct horse")
    return {"user": user, "token": token_for(user)}


def login(server) -> httpx.Client:
    """A browser's session: the login form, with its CSRF token."""
    client = httpx.Client(base_url=server.http, timeout=10)
    page = client.get("/accounts/login/")
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    done = client.post(
        "/accounts/login/",
        data={"username": "alice", "password": "correct horse", "csrfmiddlewaretoken": csrf},
    )
    assert done.status_code == 302 and "sessionid" in client.cookies
    return client


def logout(client: httpx.Client) -> None:
    page = client.get("/accounts/login/")
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    assert client.post("/accounts/logout/", data={"csrfmiddlewaretoken": csrf}).status_code in (
        200,
        302,
    )


async def session_socket(server, browser: httpx.Client) -> Ws:
    """A page's WebSocket: the session cookie and the page's own Origin."""
    conn = await websockets.connect(
        server.ws,
        origin=server.http,
        additional_headers={"Cookie": f"sessionid={browser.cookies['sessionid']}"},
        open_timeout=10,
    )
    ws = Ws(conn)
    assert (await ws.join("general"))["type"] == "joined"
    return ws


async def closed_with(ws: Ws, timeout: float = CLOSE_WITHIN + 1) -> tuple[int | None, str, float]:
    """Wait for the server to close `ws`: its close code, reason and how long it took."""
    start = time.monotonic()
    try:
        while True:
            await asyncio.wait_for(ws.conn.recv(), timeout)
    except websockets.ConnectionClosed as closed:
        rcvd = closed.rcvd
        return (
            (rcvd.code if rcvd else None),
            (rcvd.reason if rcvd else ""),
            time.monotonic() - start,
        )


async def still_open(ws: Ws) -> bool:
    return (await ws.request({"type": "ping"}, "pong", timeout=5))["type"] == "pong"


async def test_a_logout_on_one_process_closes_that_sessions_sockets_on_both(
    server, server_b, alice
):
    ended, other = login(server), login(server_b)
    on_a, on_b = await session_socket(server, ended), await session_socket(server_b, ended)
    other_session = await session_socket(server_b, other)
    token_socket = await Ws.connect(server.ws, token=alice["token"])
    await token_socket.join("general")
    stream = httpx.AsyncClient(base_url=server_b.http, timeout=10, cookies=ended.cookies)
    async with stream.stream("GET", "/events/notifications/") as sse:
        assert sse.status_code == 200

        await asyncio.to_thread(logout, ended)
        for ws in (on_a, on_b):
            code, reason, took = await closed_with(ws)
            assert (code, reason) == (4401, "session ended")
            assert took < CLOSE_WITHIN
        body = b""
        async with asyncio.timeout(CLOSE_WITHIN + 1):
            async for chunk in sse.aiter_bytes():  # ends when the server ends the stream
                body += chunk
        assert body.startswith(b"retry:")

    assert await still_open(other_session) and await still_open(token_socket)
    again = await stream.get("/events/notifications/")
    assert again.status_code == 401
    await stream.aclose()
    await other_session.close()
    await token_socket.close()


async def test_deleting_a_token_closes_its_sockets_and_nothing_else(
    server, server_b, alice, redis_url
):
    browser = login(server)
    by_token = [await Ws.connect(s.ws, token=alice["token"]) for s in (server, server_b)]
    by_session = await session_socket(server_b, browser)
    manage_shell(
        "from rest_framework.authtoken.models import Token; "
        f"Token.objects.filter(key={alice['token']!r}).delete()",
        redis_url=redis_url,
    )
    for ws in by_token:
        assert (await closed_with(ws))[:2] == (4401, "session ended")
    assert await still_open(by_session)
    await by_session.close()


async def test_a_user_deactivated_from_a_shell_is_cut_off_everywhere(
    server, server_b, alice, redis_url
):
    browser = login(server_b)
    sockets = [
        await Ws.connect(server.ws, token=alice["token"]),
        await Ws.connect(server_b.ws, token=alice["token"]),
        await session_socket(server, browser),
    ]
    manage_shell(
        "from django.contrib.auth import get_user_model; "
        "u = get_user_model().objects.get(username='alice'); u.is_active = False; u.save()",
        redis_url=redis_url,
    )
    for ws in sockets:
        assert (await closed_with(ws))[:2] == (4401, "session ended")


async def test_a_session_deleted_behind_the_servers_back_ends_at_the_next_recheck(
    daphnes, redis_server, alice
):
    """No signal fires when the rows go by SQL (`clearsessions`, a script):
    each connection checks its credential again every SESSION_RECHECK_SECONDS.
    A session gone without a logout may only have a new key (Django re-keys
    on a login, a password change, a key rotation), so the socket is told to
    reconnect (1012); the reconnect, on a session that is really gone, gets 4401."""
    proc = daphnes(
        redis_url=redis_server.url,
        env={"SESSION_RECHECK_SECONDS": "1", "GROUP_REFRESH_SECONDS": "1"},
    )
    browser = login(proc)
    by_session = await session_socket(proc, browser)
    by_token = await Ws.connect(proc.ws, token=alice["token"])
    await by_token.join("general")
    with psycopg.connect(database_url(), autocommit=True) as sql:
        sql.execute("DELETE FROM django_session")
    code, reason, _ = await closed_with(by_session, timeout=10)
    assert (code, reason) == (1012, "session changed: reconnect")
    again = Ws(
        await websockets.connect(
            proc.ws,
            origin=proc.http,
            additional_headers={"Cookie": f"sessionid={browser.cookies['sessionid']}"},
            open_timeout=10,
        )
    )
    assert (await closed_with(again, timeout=10))[0] == 4401
    assert await still_open(by_token)
    await by_token.close()


async def test_a_password_change_ends_the_sessions_but_not_the_token(
    server, server_b, alice, redis_url
):
    """A new password invalidates the user's sessions (their auth hash), as
    Django's own session check does; a DRF token does not depend on it."""
    sessions = [
        await session_socket(server, login(server)),
        await session_socket(server_b, login(server_b)),
    ]
    by_token = await Ws.connect(server_b.ws, token=alice["token"])
    await by_token.join("general")
    manage_shell(
        "from django.contrib.auth import get_user_model; "
        "u = get_user_model().objects.get(username='alice'); "
        "u.set_password('battery staple'); u.save()",
        redis_url=redis_url,
    )
    for ws in sessions:
        assert (await closed_with(ws))[:2] == (4401, "session ended")
    assert await still_open(by_token)
    await by_token.close()


async def test_a_ticket_socket_ends_with_the_session_that_asked_for_it(server, server_b, alice):
    """A cross-origin page's socket, opened with a ?ticket= its session asked
    for, ends when that session logs out; one from a token's ticket stays."""
    browser = login(server)
    page = browser.get("/accounts/login/")
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    by_session = browser.post("/api/auth/ws-ticket/", headers={"X-CSRFToken": csrf})
    async with httpx.AsyncClient(timeout=10) as client:
        by_token = await client.post(
            f"{server.http}/api/auth/ws-ticket/",
            headers={"Authorization": f"Token {alice['token']}"},
        )
    sockets = {}
    for name, response in (("session", by_session), ("token", by_token)):
        assert response.status_code == 200, response.text
        ticket = response.json()["ticket"]
        sockets[name] = Ws(await websockets.connect(f"{server_b.ws}?ticket={ticket}"))
        assert (await sockets[name].join("general"))["type"] == "joined"
    await asyncio.to_thread(logout, browser)
    assert (await closed_with(sockets["session"]))[:2] == (4401, "session ended")
    assert await still_open(sockets["token"])
    await sockets["token"].close()
