"""
deploy/nginx.conf, run for real (Debian's nginx) in front of two daphne
processes on one Redis: WebSocket, SSE and REST through the proxy, and a
process killed behind it.
"""

import asyncio
import json
import os
import signal
import uuid

import httpx
import pytest

from chat.models import Room
from tests.hosts.nginx import MISSING, Nginx

from .conftest import DaphneProcess, Ws

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]


@pytest.fixture
def behind_nginx(redis_url):
    """Two daphne processes and nginx in front of them, per deploy/nginx.conf."""
    if not Nginx.available():
        # `make test` installs nginx-light as root; in CI a missing one fails.
        (pytest.fail if os.environ.get("CI") else pytest.skip)(MISSING)
    env = {"CHAT_MESSAGE_RATE": "off", "GROUP_REFRESH_SECONDS": "1"}
    one = DaphneProcess(redis_url=redis_url, env=env).start()
    two = DaphneProcess(redis_url=redis_url, env=env).start()
    proxy = None
    try:
        proxy = Nginx([(one.host, one.port), (two.host, two.port)]).start()
        yield {"http": proxy.http, "ws": proxy.ws, "daphnes": (one, two)}
    finally:
        if proxy is not None:
            proxy.stop()
        one.stop()
        two.stop()


@pytest.fixture
def people(make_user, token_for):
    alice, bob = make_user("alice"), make_user("bob")
    Room.objects.create(slug="general", name="General")
    return {"alice": token_for(alice), "bob": token_for(bob)}


async def sse_events(response, count: int, timeout: float = 15.0) -> list[dict]:
    """The data of the next `count` `message` events of an SSE response."""
    got, event = [], None
    lines = response.aiter_lines()
    async with asyncio.timeout(timeout):
        while len(got) < count:
            line = await anext(lines)
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event == "message":
                got.append(json.loads(line.split(":", 1)[1]))
    return got


async def test_websocket_sse_and_rest_work_through_nginx_across_two_processes(behind_nginx, people):
    proxy = behind_nginx
    # least_conn spreads the two sockets over the two processes.
    a = await Ws.connect(proxy["ws"], token=people["alice"], origin=proxy["http"])
    b = await Ws.connect(proxy["ws"], token=people["bob"], origin=proxy["http"])
    await a.join("general")
    await b.join("general")
    headers = {"Authorization": f"Token {people['bob']}"}
    async with httpx.AsyncClient(base_url=proxy["http"], timeout=20) as client:
        async with client.stream("GET", "/events/rooms/general/", headers=headers) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            await a.post("general", "over the socket")
            rest = await client.post(
                "/api/rooms/general/messages/",
                json={"content": "over rest", "client_id": str(uuid.uuid4())},
                headers={"Authorization": f"Token {people['alice']}"},
            )
            assert rest.status_code == 201
            streamed = await sse_events(stream, 2)
    assert [m["content"] for m in streamed] == ["over the socket", "over rest"]
    assert [m["content"] for m in await b.messages("general", 2)] == [
        "over the socket",
        "over rest",
    ]
    await a.close()
    await b.close()


async def test_a_process_killed_behind_nginx_loses_nothing(behind_nginx, people):
    """Kill every socket's process in turn: clients reconnect through nginx to
    the survivor and resume with `since`; every message arrives once, in order."""
    proxy = behind_nginx
    one, two = proxy["daphnes"]
    b = await Ws.connect(proxy["ws"], token=people["bob"], origin=proxy["http"])
    await b.join("general")
    a = await Ws.connect(proxy["ws"], token=people["alice"], origin=proxy["http"])
    await a.post("general", "first")
    seen = [m["seq"] for m in await b.messages("general", 1)]
    await a.close()

    one.signal(signal.SIGKILL)
    one.wait_exit(10)
    async with httpx.AsyncClient(base_url=proxy["http"], timeout=20) as client:
        for text in ["while", "bob", "reconnects"]:
            response = await client.post(
                "/api/rooms/general/messages/",
                json={"content": text},
                headers={"Authorization": f"Token {people['alice']}"},
            )
            assert response.status_code == 201, response.text
    again = await Ws.connect(proxy["ws"], token=people["bob"], origin=proxy["http"])
    await again.join("general", since=seen[-1])
    seen += [m["seq"] for m in await again.messages("general", 3)]
    assert seen == [1, 2, 3, 4]
    await again.close()
    await b.close()
