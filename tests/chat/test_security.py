"""
Hostile input over REST and in pages: text stored exactly and shown escaped on
every page (room, index, admin), NUL and lone surrogates refused cleanly, no
500 for odd identifiers, CSRF on session writes and the login form.
"""

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.test import Client
from rest_framework.test import APIClient

from chat import services
from chat.models import Membership, Message, Room

HOSTILE = [
    "<script>alert(1)</script>",
    '"><svg onload=alert(1)>',
    "<img src=x onerror=alert(1)>",
    "javascript:alert(1)",
    "</script><script>alert(1)</script>",
    "\u202egnp.exe",  # RTL override
    "e\u0301\u0302\u0303 \u0627\u0644\u0639\u0631\u0628\u064a\u0629",  # combining marks, Arabic
    "\U0001f469\u200d\U0001f4bb \U0001f1eb\U0001f1f7",  # ZWJ sequence, flag
    "&lt;already escaped&gt; &amp;",
    "{{ 7|add:7 }} {% now 'Y' %} ${7*7}",
    "'; DROP TABLE chat_message; --",
    "line one\nline two\ttab",
]


@pytest.fixture
def browser(alice):
    client = Client()
    client.force_login(alice)
    return client


# --- text is stored and returned exactly -----------------------------------------


@pytest.mark.parametrize("content", HOSTILE)
def test_hostile_text_is_stored_and_returned_exactly_over_rest(api, alice, general, content):
    client = api(alice)
    posted = client.post("/api/rooms/general/messages/", {"content": content}, format="json")
    assert posted.status_code == 201 and posted.json()["content"] == content
    (listed,) = client.get("/api/rooms/general/messages/").json()["results"]
    assert listed["content"] == content
    assert Message.objects.get().content == content


# --- and escaped wherever it is shown ----------------------------------------------------


ROOT = Path(__file__).resolve().parents[2]


def test_the_room_page_embeds_history_with_json_script_and_never_raw_markup(
    browser, alice, general
):
    for content in HOSTILE:
        services.message_send(user=alice, slug="general", content=content, client_id=uuid.uuid4())
    html = browser.get("/rooms/general/").content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "<svg onload" not in html and "<img src=x" not in html
    assert "\\u003Cscript\\u003Ealert(1)\\u003C/script\\u003E" in html
    embedded = re.search(
        r'<script id="history-data" type="application/json">(.*?)</script>', html, re.S
    )
    history = json.loads(embedded.group(1))
    assert [m["content"] for m in history] == HOSTILE


def test_room_names_are_escaped_on_the_index_and_the_room_page(browser, alice):
    name = '<img src=x onerror=alert(1)> "quoted"'
    services.room_create(user=alice, slug="markup", name=name)
    for path in ["/", "/rooms/markup/"]:
        html = browser.get(path).content.decode()
        assert "<img src=x" not in html, path
        assert "&lt;img src=x onerror=alert(1)&gt; &quot;quoted&quot;" in html, path


def test_the_admin_lists_hostile_messages_and_room_names_escaped(make_user, alice):
    staff = make_user("admin", is_staff=True)
    staff.is_superuser = True
    staff.save()
    room = services.room_create(user=alice, slug="markup", name="<script>alert(2)</script>")
    for content in HOSTILE[:5]:
        services.message_send(user=alice, slug=room.slug, content=content, client_id=uuid.uuid4())
    client = Client()
    client.force_login(staff)
    for path in ["/admin/chat/message/", "/admin/chat/room/", "/admin/chat/membership/"]:
        response = client.get(path)
        assert response.status_code == 200, path
        html = response.content.decode()
        assert "<script>alert(" not in html and "<svg onload" not in html, path
        assert "<img src=x" not in html, path
    html = client.get("/admin/chat/message/").content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


# --- NUL, lone surrogates and odd identifiers: 400 or 404, never 500 or 503 ---------


WRITES = [
    ("/api/rooms/", {"slug": "x1", "name": "NAME"}),
    ("/api/rooms/general/messages/", {"content": "NAME"}),
    ("/api/rooms/general/messages/", {"content": "ok", "client_id": "NAME"}),
    ("/api/rooms/general/messages/", {"content": "ok", "extra": ["NAME"]}),
    ("/api/rooms/general/read/", {"seq": 1, "NAME": 1}),
    ("/api/rooms/general/members/", {"username": "NAME"}),
    ("/api/auth/token/", {"username": "NAME", "password": "pw"}),
]


@pytest.mark.parametrize(("path", "body"), WRITES)
@pytest.mark.parametrize("bad", ["a\\u0000b", "\\ud800", "x\\udfffy"])
def test_a_json_body_with_nul_or_a_lone_surrogate_anywhere_is_400(
    api, alice, general, path, body, bad
):
    raw = json.dumps(body).replace("NAME", bad)  # the escape goes over the wire as is
    response = api(alice).post(path, raw, content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "BAD_REQUEST"
    assert not Room.objects.filter(slug="x1").exists()
    assert not Message.objects.exists()


@pytest.mark.parametrize(
    "slug", ["a%00b", "%00", "general%00", "gen%C3%A9ral", "..%2F..", "x" * 65]
)
def test_a_room_path_that_is_no_slug_is_404_on_rest_pages_and_sse(api, browser, alice, slug):
    client = api(alice)
    responses = [client.get(f"/api/rooms/{slug}/{path}") for path in ["messages/", "receipts/"]]
    responses += [
        client.get(f"/api/rooms/{slug}/presence/"),
        client.post(f"/api/rooms/{slug}/messages/", {"content": "x"}, format="json"),
        browser.get(f"/rooms/{slug}/"),
        browser.get(f"/events/rooms/{slug}/"),
    ]
    for response in responses:
        assert response.status_code == 404, (response.request["PATH_INFO"], response.content)
        if response["Content-Type"] == "application/json":  # not ours when no URL matches
            assert response.json()["code"] == "NOT_FOUND"


@pytest.mark.parametrize("value", ["\u00b2", "\u0661", "\u00b9\u00b9", "1e3", "0x10", " 1"])
def test_unicode_and_odd_digits_in_parameters_are_400_or_404_never_500(api, alice, general, value):
    client = api(alice)
    for param in ["before", "after", "limit"]:
        response = client.get("/api/rooms/general/messages/", {param: value})
        assert response.status_code == 400, (param, response.content)
    assert client.post(f"/api/notifications/{value}/read/").status_code == 404


# --- CSRF -------------------------------------------------------------------------------


def test_a_session_write_needs_the_csrf_token_and_a_token_write_does_not(alice, general, token_for):
    session = APIClient(enforce_csrf_checks=True)
    session.force_login(alice)
    refused = session.post("/api/rooms/general/messages/", {"content": "a"}, format="json")
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    for path, body in [
        ("/api/rooms/", {"slug": "new", "name": "New"}),
        ("/api/auth/ws-ticket/", {}),
    ]:
        assert session.post(path, body, format="json").status_code == 403, path
    # the same session with the token the page carries: accepted
    session.get("/rooms/general/")
    csrf = session.cookies["csrftoken"].value
    accepted = session.post(
        "/api/rooms/general/messages/", {"content": "b"}, format="json", HTTP_X_CSRFTOKEN=csrf
    )
    assert accepted.status_code == 201
    # an API token needs no CSRF token: no browser sends it by itself
    tokened = APIClient(
        enforce_csrf_checks=True, headers={"Authorization": f"Token {token_for(alice)}"}
    )
    assert (
        tokened.post("/api/rooms/general/messages/", {"content": "c"}, format="json").status_code
        == 201
    )
    assert [m.content for m in Message.objects.order_by("seq")] == ["b", "c"]


def test_the_login_form_needs_its_csrf_token(alice):
    client = Client(enforce_csrf_checks=True)
    refused = client.post("/accounts/login/", {"username": "alice", "password": "pw"})
    assert refused.status_code == 403
    client.get("/accounts/login/")
    accepted = client.post(
        "/accounts/login/",
        {
            "username": "alice",
            "password": "pw",
            "csrfmiddlewaretoken": client.cookies["csrftoken"].value,
        },
    )
    assert accepted.status_code == 302


def test_an_outsider_sees_nothing_of_a_private_room_over_rest_or_pages(api, browser, bob, secret):
    services.message_send(
        user=Membership.objects.get(room=secret).user,
        slug="secret",
        content="the launch code",
        client_id=uuid.uuid4(),
    )
    outsider = Client()
    outsider.force_login(bob)
    page = outsider.get("/rooms/secret/")
    assert page.status_code == 404 and b"launch code" not in page.content
    unknown = outsider.get("/rooms/sekret/")
    assert unknown.status_code == 404
    # The same page but for the per-request tokens (CSRF, CSP nonce).
    tokens = re.compile(rb'(value|content|nonce)="[A-Za-z0-9+/=_-]{20,}"')
    assert tokens.sub(b"", page.content.replace(b"secret", b"sekret")) == tokens.sub(
        b"", unknown.content
    )
    assert b'href="/rooms/secret/"' not in outsider.get("/").content
    assert "secret" not in [r["slug"] for r in api(bob).get("/api/rooms/").json()["results"]]


# --- security headers ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/rooms/general/", "/rooms/nowhere/", "/api/docs/"])
def test_the_pages_carry_the_security_headers(alice, general, path):
    client = Client()
    client.force_login(alice)
    response = client.get(path)
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-eval" not in csp and "script-src 'self';" in csp
    if path != "/api/docs/":  # Swagger UI inserts style elements
        assert "unsafe-inline" not in csp
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"


def test_the_demo_gives_the_admin_the_same_policy(admin_client):
    assert "script-src 'self'" in admin_client.get("/admin/")["Content-Security-Policy"]


def test_the_production_settings_pass_the_deploy_check():
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "SECRET_KEY": "a-production-key-" + "x7Q!" * 12,
        "HTTPS": "1",
        "ALLOWED_HOSTS": "chat.example.com",
    }
    env.pop("DEBUG", None)
    check = [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"]
    ok = subprocess.run(check, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    plain = subprocess.run(
        check, cwd=ROOT, env={**env, "HTTPS": "0"}, capture_output=True, text=True, timeout=120
    )
    assert plain.returncode != 0 and "SESSION_COOKIE_SECURE" in plain.stderr
