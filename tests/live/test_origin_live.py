"""
The WebSocket origin check over a real daphne (contract §2, Django's CSRF
origin rule): the page's own scheme://host:port opens a session socket;
another port, plain http of an https page and lookalikes are refused with
403 at the handshake; CSRF_TRUSTED_ORIGINS and WS_ALLOWED_ORIGINS open one.
"""

import pytest
import websockets

from chat.models import Room

from .conftest import ServerProcess, Ws, session_cookie

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]


@pytest.fixture(scope="module")
def site(django_db_setup, redis_url):
    """A daphne that trusts a TLS proxy's X-Forwarded-Proto and lists trusted origins."""
    proc = ServerProcess(
        redis_url=redis_url,
        env={
            "USE_X_FORWARDED_PROTO": "1",
            "CSRF_TRUSTED_ORIGINS": "https://app.example.org,https://*.trusted.example",
            "WS_ALLOWED_ORIGINS": "https://widget.example.net",
        },
    ).start()
    yield proc
    proc.stop()


@pytest.fixture
def cookie(site, make_user):
    Room.objects.create(slug="general", name="General")
    alice = make_user("alice")

    async def make() -> str:
        return await session_cookie(site, alice)

    return make


async def opens(site, origin: str, cookie: str, **headers: str) -> bool:
    """True when a session socket with this Origin joins a room; False on a 403."""
    try:
        conn = await websockets.connect(
            site.ws, origin=origin, additional_headers={"Cookie": cookie, **headers}
        )
    except websockets.exceptions.InvalidStatus as refused:
        assert refused.response.status_code == 403
        return False
    ws = Ws(conn)
    assert (await ws.join("general"))["type"] == "joined"
    await ws.close()
    return True


async def test_the_pages_own_origin_opens_and_another_port_or_scheme_does_not(site, cookie):
    session = await cookie()
    port = site.port
    assert await opens(site, f"http://127.0.0.1:{port}", session)
    assert not await opens(site, f"http://127.0.0.1:{port + 1}", session)
    assert not await opens(site, f"http://127.0.0.1:{port - 1}", session)
    assert not await opens(site, f"https://127.0.0.1:{port}", session)
    assert not await opens(site, "http://127.0.0.1", session)
    # Another allowed host is another origin: the browser's Host names the page's.
    assert not await opens(site, f"http://localhost:{port}", session)


async def test_behind_a_tls_proxy_the_https_page_is_the_own_origin(site, cookie):
    session = await cookie()
    origin = f"127.0.0.1:{site.port}"
    assert await opens(site, f"https://{origin}", session, **{"X-Forwarded-Proto": "https"})
    assert not await opens(site, f"http://{origin}", session, **{"X-Forwarded-Proto": "https"})


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example.org", True),
        ("https://eu.trusted.example", True),
        ("https://widget.example.net", True),
        ("http://app.example.org", False),
        ("https://app.example.org:8443", False),
        ("https://app.example.org.evil.com", False),
        ("https://trusted.example.evil.com", False),
        ("https://eviltrusted.example", False),
        ("http://widget.example.net", False),
    ],
)
async def test_trusted_origins_open_and_their_lookalikes_do_not(site, cookie, origin, allowed):
    assert await opens(site, origin, await cookie()) is allowed
