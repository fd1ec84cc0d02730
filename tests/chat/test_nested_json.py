"""A JSON body or frame nested too deep (contract §4): 400 BAD_REQUEST with a
clear message on every REST operation that takes a body, enumerated from the
package's OpenAPI schema so a new one is covered; never a RecursionError, a
500 or anything stored. On the WebSocket: an error frame, the connection open."""

import pytest
from channels.testing import WebsocketCommunicator
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from chat.consumers import RealtimeConsumer
from chat.models import Membership, Message, Room
from django_realtime.strictjson import MAX_DEPTH
from notifications.models import Notification

# Past the parser's own stack (a RecursionError inside json), and just past MAX_DEPTH.
PAST_THE_STACK = "[" * 5000
JUST_TOO_DEEP = '{"content": ' + "[" * MAX_DEPTH + "1" + "]" * MAX_DEPTH + "}"
# What fills each path parameter: a room alice owns, a notification of hers, a topic.
PATH_VALUES = {"slug": "general", "topic": "public:rooms", "name": "notes", "id": "ID"}


def operations_with_a_body(client) -> list[tuple[str, str]]:
    """From the schema the package serves: every operation whose request has a body."""
    schema = client.get("/api/schema/?format=json").json()
    found = [
        (method.upper(), path)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in {"post", "put", "patch"} and "requestBody" in operation
    ]
    assert ("POST", "/api/auth/token/") in found and len(found) >= 6, found
    return found


@pytest.fixture(autouse=True)
def _push_on(realtime):
    """Web Push configured, so its endpoints read their bodies rather than 404."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    realtime.WEBPUSH_VAPID_PRIVATE_KEY = pem.decode()


@pytest.fixture
def owner(make_user, general):
    alice = make_user("alice", is_staff=True)
    Membership.objects.create(room=general, user=alice, role=Membership.Role.OWNER)
    return alice


@pytest.mark.parametrize("body", [PAST_THE_STACK, JUST_TOO_DEEP], ids=["5000", "65"])
def test_a_body_nested_too_deep_is_400_on_every_operation_that_takes_one(api, owner, body):
    notification = Notification.objects.create(recipient=owner, kind="x", data={})
    for method, path in operations_with_a_body(api()):
        url = path
        for name, value in PATH_VALUES.items():
            url = url.replace("{" + name + "}", str(notification.pk) if value == "ID" else value)
        assert "{" not in url, f"no value for a parameter of {path}"
        client = api(None if path == "/api/auth/token/" else owner)
        response = getattr(client, method.lower())(url, body, content_type="application/json")
        assert response.status_code == 400, (method, path, response.content)
        assert response.json() == {
            "detail": f"JSON is nested too deep (more than {MAX_DEPTH} levels)",
            "code": "BAD_REQUEST",
        }, (method, path)
    assert not Message.objects.exists()
    assert list(Room.objects.values_list("slug", flat=True)) == ["general"]


def test_nesting_up_to_the_limit_is_parsed(api, owner):
    """The limit refuses nothing a client means: 64 levels are still read
    (and this content, not being text, is refused for what it is)."""
    body = '{"content": ' + "[" * (MAX_DEPTH - 1) + "1" + "]" * (MAX_DEPTH - 1) + "}"
    response = api(owner).post(
        "/api/rooms/general/messages/", body, content_type="application/json"
    )
    assert response.status_code == 400
    assert "nested" not in response.json()["detail"]


@pytest.mark.django_db(transaction=True)
async def test_a_frame_nested_too_deep_gets_an_error_frame_and_the_connection_stays(
    make_user,
):
    from asgiref.sync import sync_to_async

    alice = await sync_to_async(make_user)("alice")
    ws = WebsocketCommunicator(RealtimeConsumer.as_asgi(), "/ws/")
    ws.scope["user"] = alice
    connected, _ = await ws.connect()
    assert connected
    for text in [PAST_THE_STACK, '{"type": "ping", "x": ' + "[" * 100 + "]" * 100 + "}"]:
        await ws.send_to(text_data=text)
        frame = await ws.receive_json_from(timeout=5)
        assert frame["type"] == "error" and frame["code"] == "BAD_REQUEST", frame
    await ws.send_json_to({"type": "join", "room": "nowhere", "ref": 1})
    frame = await ws.receive_json_from(timeout=5)
    assert frame["type"] == "error" and frame.get("ref") == 1  # still answering
    await ws.disconnect()
