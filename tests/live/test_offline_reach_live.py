"""
Offline reach (contract §11) against two real daphne processes sharing
PostgreSQL and Redis, a real SMTP server on loopback (aiosmtpd) and a push
service stand-in on loopback that checks what a browser vendor's service
checks (the VAPID JWT's signature and `aud`, `TTL`, `Content-Encoding:
aes128gcm`) and decrypts each payload with the subscription's own keys.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import http_ece
import httpx
import pytest
from aiosmtpd.controller import Controller
from asgiref.sync import sync_to_async
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02

from chat.models import Room
from notifications import push
from notifications.models import NotificationPreference, PushSubscription
from tests.servers import free_port

from .conftest import ServerProcess, Ws

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

AFTER_SECONDS = 2  # EMAIL_DIGEST_AFTER_SECONDS of the test servers


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Device:
    """A browser's push subscription: its own key pair and auth secret."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.auth = b"0123456789abcdef"

    def to_json(self) -> dict:
        public = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": self.endpoint,
            "keys": {"p256dh": b64url(public), "auth": b64url(self.auth)},
        }


class PushService:
    """A push service on loopback: it answers 201 (410 under /gone/) and
    keeps, per request, the path, what a vendor would reject it for, and the
    decrypted JSON payload."""

    def __init__(self) -> None:
        self.port = free_port()
        self.prefix = f"http://127.0.0.1:{self.port}/push/"
        self.devices: dict[str, Device] = {}
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                service.receive(self.path, dict(self.headers), body)
                self.send_response(410 if "/gone/" in self.path else 201)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def device(self, name: str) -> Device:
        device = self.devices[f"/push/{name}"] = Device(f"{self.prefix}{name}")
        return device

    def receive(self, path: str, headers: dict[str, str], body: bytes) -> None:
        problems = []
        lower = {k.lower(): v for k, v in headers.items()}
        if not lower.get("ttl", "").isdigit():
            problems.append("no TTL")
        if lower.get("content-encoding") != "aes128gcm":
            problems.append("not aes128gcm")
        auth = lower.get("authorization", "")
        try:
            if not Vapid02.verify(auth):
                problems.append("bad VAPID signature")
            token = dict(p.split("=", 1) for p in auth.split(" ", 1)[1].split(","))["t"]
            claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
            if claims["aud"] != f"http://127.0.0.1:{self.port}" or claims["exp"] < time.time():
                problems.append(f"bad claims {claims}")
        except Exception as exc:  # noqa: BLE001 - a vendor rejects it; the test says why
            problems.append(f"bad Authorization: {exc!r}")
        payload = None
        device = self.devices.get(path)
        if device is not None:
            try:
                plain = http_ece.decrypt(
                    body, private_key=device.key, auth_secret=device.auth, version="aes128gcm"
                )
                payload = json.loads(plain)
            except Exception as exc:  # noqa: BLE001
                problems.append(f"cannot decrypt: {exc!r}")
        with self.lock:
            self.received.append({"path": path, "problems": problems, "payload": payload})

    def to(self, name: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.received if r["path"] == f"/push/{name}"]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    """Every message a real SMTP server on loopback accepted."""

    def __init__(self) -> None:
        self.port = free_port()
        self.messages: list[email.message.EmailMessage] = []
        self.controller: Controller | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(
            email.message_from_bytes(envelope.content, policy=email.policy.default)  # type: ignore[arg-type]
        )
        return "250 OK"

    def start(self) -> None:
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def to(self, address: str) -> list[email.message.EmailMessage]:
        return [m for m in self.messages if m["To"] == address]


@pytest.fixture(scope="module")
def reach(django_db_setup, redis_url):
    """The stand-in, the mail server, and two servers configured for both."""
    service, mailbox = PushService(), Mailbox()
    mailbox.start()
    key = push.generate_private_key_pem()
    env = {
        "WEBPUSH_VAPID_PRIVATE_KEY": key,
        "WEBPUSH_ENDPOINTS": service.prefix,
        "EMAIL_DIGEST_AFTER_SECONDS": str(AFTER_SECONDS),
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(mailbox.port),
        "CHAT_MESSAGE_RATE": "off",
    }
    first = ServerProcess(redis_url=redis_url, env=env)
    env["SITE_URL"] = first.http
    servers = [first.start(), ServerProcess(redis_url=redis_url, env=env).start()]
    for server in servers:  # their first request starts their offline loops
        assert httpx.get(f"{server.http}/healthz", timeout=10).status_code == 200
    yield {"service": service, "mailbox": mailbox, "servers": servers}
    for server in servers:
        server.stop()
    mailbox.stop()
    service.stop()


@pytest.fixture
def people(make_user, token_for):
    def make(name: str, *, email_address: bool = True) -> dict:
        user = make_user(name)
        if email_address:
            user.email = f"{name}@example.com"
            user.save()
        return {"user": user, "token": token_for(user), "email": user.email}

    Room.objects.create(slug="general", name="General")
    return make


def client(server: ServerProcess, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Token {token}"} if token else {}
    return httpx.AsyncClient(base_url=server.http, headers=headers, timeout=10)


async def subscribe(server: ServerProcess, token: str, device: Device) -> httpx.Response:
    async with client(server, token) as http:
        return await http.post("/api/push/subscriptions/", json=device.to_json())


async def mention(server: ServerProcess, token: str, text: str) -> dict:
    async with client(server, token) as http:
        response = await http.post("/api/rooms/general/messages/", json={"content": text})
    assert response.status_code == 201, response.text
    return response.json()


async def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)


async def test_an_offline_user_gets_a_push_per_mention_and_one_digest_once(reach, people):
    """bob has no connection open: each mention is pushed to his device within
    5 s, decrypting to the WebSocket's `notification` frame; after the delay
    one e-mail carries both, though both processes run the digest loop; its
    signed unsubscribe link works without logging in, for bob only."""
    a, b = reach["servers"]
    service, mailbox = reach["service"], reach["mailbox"]
    alice, bob = await sync_to_async(people)("alice"), await sync_to_async(people)("bob")
    device = service.device("bob-phone")
    response = await subscribe(b, bob["token"], device)
    assert response.status_code == 201, response.text

    await mention(a, alice["token"], "@bob first")
    await until(lambda: len(service.to("bob-phone")) == 1, 5, "the first push")
    await mention(b, alice["token"], "@bob second")
    pushes = await until(
        lambda: len(service.to("bob-phone")) == 2 and service.to("bob-phone"), 5, "the second push"
    )
    assert [p["problems"] for p in pushes] == [[], []]
    frames = [p["payload"] for p in pushes]
    assert [f["type"] for f in frames] == ["notification", "notification"]
    assert [f["notification"]["data"]["excerpt"] for f in frames] == ["@bob first", "@bob second"]
    assert frames[0]["notification"]["kind"] == "mention"
    assert frames[0]["notification"]["read"] is False

    digest = (await until(lambda: mailbox.to(bob["email"]), AFTER_SECONDS + 10, "the digest"))[0]
    text = digest.get_body(("plain",)).get_content()
    html = digest.get_body(("html",)).get_content()
    assert "@bob first" in text and "@bob second" in text
    assert "@bob first" in html and "@bob second" in html
    assert a.http in text  # the site's link
    await asyncio.sleep(AFTER_SECONDS + 1)  # both processes have had their rounds since
    assert len(mailbox.to(bob["email"])) == 1
    assert len(service.to("bob-phone")) == 2
    assert not mailbox.to(alice["email"])

    # RFC 8058 one-click, without logging in; only bob's preference changes.
    assert digest["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = str(digest["List-Unsubscribe"]).strip().strip("<>")
    assert link.startswith(a.http)
    path = urlsplit(link).path
    token = path.rstrip("/").rsplit("/", 1)[1]
    async with client(b) as anonymous:
        forged = await anonymous.post(path.replace(token, token[:-2] + "xx"))
        assert forged.status_code == 400
        page = await anonymous.get(path)
        assert page.status_code == 200 and "Stop" in page.text
        done = await anonymous.post(path, data={"List-Unsubscribe": "One-Click"})
        assert done.status_code == 200 and "no more" in done.text
    prefs = {p.user_id: p.email async for p in NotificationPreference.objects.all()}
    assert prefs == {bob["user"].pk: False}
    async with client(a, bob["token"]) as http:
        assert (await http.get("/api/notifications/preferences/")).json() == {
            "push": True,
            "email": False,
        }


async def test_a_user_with_an_open_connection_on_either_process_gets_neither(reach, people):
    """carol has a WebSocket open on one process, dave on the other: mentioned,
    neither gets a push or an e-mail; erin, offline, gets both (the loops ran)."""
    a, b = reach["servers"]
    service, mailbox = reach["service"], reach["mailbox"]
    make = sync_to_async(people)
    alice, carol, dave, erin = [await make(n) for n in ("alice", "carol", "dave", "erin")]
    for who, server in ((carol, a), (dave, b), (erin, a)):
        assert (
            await subscribe(server, who["token"], service.device(who["email"]))
        ).status_code == 201
    carol_ws = await Ws.connect(a.ws, token=carol["token"])
    dave_ws = await Ws.connect(b.ws, token=dave["token"])
    await mention(a, alice["token"], "@carol @dave @erin look")
    await carol_ws.recv_type("notification")
    await dave_ws.recv_type("notification")
    await until(lambda: service.to(erin["email"]), 5, "erin's push")
    await until(lambda: mailbox.to(erin["email"]), AFTER_SECONDS + 10, "erin's digest")
    await asyncio.sleep(1)
    assert not service.to(carol["email"]) and not service.to(dave["email"])
    assert not mailbox.to(carol["email"]) and not mailbox.to(dave["email"])
    for ws in (carol_ws, dave_ws):
        await ws.close()


async def test_a_notification_read_before_the_digest_is_not_emailed(reach, people):
    a, b = reach["servers"]
    mailbox = reach["mailbox"]
    make = sync_to_async(people)
    alice, fred, gina = [await make(n) for n in ("alice", "fred", "gina")]
    await mention(a, alice["token"], "@fred @gina hello")
    async with client(b, fred["token"]) as http:
        assert (await http.post("/api/notifications/read-all/")).json() == {"marked": 1}
    await until(lambda: mailbox.to(gina["email"]), AFTER_SECONDS + 10, "gina's digest")
    await asyncio.sleep(1)
    assert not mailbox.to(fred["email"])


async def test_the_digest_arrives_once_after_the_mail_server_comes_back(reach, people):
    a, _ = reach["servers"]
    mailbox = reach["mailbox"]
    make = sync_to_async(people)
    alice, hugo = await make("alice"), await make("hugo")
    mailbox.stop()
    try:
        await mention(a, alice["token"], "@hugo while the mail server is away")
        await asyncio.sleep(AFTER_SECONDS + 2)  # due, tried, failed
        assert not mailbox.to(hugo["email"])
    finally:
        mailbox.start()
    await until(lambda: mailbox.to(hugo["email"]), 25, "the digest after the outage")
    await asyncio.sleep(AFTER_SECONDS)
    assert len(mailbox.to(hugo["email"])) == 1


async def test_a_gone_subscription_is_removed_and_an_endpoint_elsewhere_is_refused(reach, people):
    """A 410 removes the subscription; an endpoint outside WEBPUSH_ENDPOINTS
    is 400 and nothing ever reaches it."""
    a, b = reach["servers"]
    service = reach["service"]
    make = sync_to_async(people)
    alice, ivan = await make("alice"), await make("ivan")
    gone = service.device("gone/ivan-old")
    assert (await subscribe(b, ivan["token"], gone)).status_code == 201

    trap = socket.socket()
    trap.bind(("127.0.0.1", 0))
    trap.listen()
    trap.setblocking(False)
    port = trap.getsockname()[1]
    for endpoint in (
        f"http://127.0.0.1:{port}/push/x",
        "https://evil.example/push/x",
        f"{service.prefix.replace('http://', 'https://')}x",
        f"http://user@127.0.0.1:{service.port}/push/x",
    ):
        response = await subscribe(a, ivan["token"], Device(endpoint))
        assert response.status_code == 400, (endpoint, response.text)
        assert "WEBPUSH_ENDPOINTS" in response.json()["detail"]

    await mention(a, alice["token"], "@ivan ping")
    await until(lambda: service.to("gone/ivan-old"), 5, "the push to the gone subscription")
    deadline = time.monotonic() + 5
    while await PushSubscription.objects.filter(endpoint=gone.endpoint).aexists():
        assert time.monotonic() < deadline, "the 410 did not remove the subscription"
        await asyncio.sleep(0.1)
    with pytest.raises(BlockingIOError):
        trap.accept()  # nobody ever connected to the address ivan chose
    trap.close()
