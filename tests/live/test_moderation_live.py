"""
Live moderation against real daphne processes sharing PostgreSQL and Redis:
a staff member acts in the admin (over HTTP, on one server) or from a shell
(another process), and open connections, on any server, see it at once.
"""

import asyncio
from functools import partial

import httpx
import pytest

from chat.models import Membership, Message, ModerationAction, Room

from .conftest import DaphneProcess, Ws, manage_shell

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]


@pytest.fixture
def people(make_user, token_for):
    """alice and bob with API tokens, a staff member `mod` (password pw), and general."""
    alice, bob = make_user("alice"), make_user("bob")
    mod = make_user("mod", is_staff=True)
    mod.is_superuser = True
    mod.save()
    room = Room.objects.create(slug="general", name="General")
    return {
        "alice": token_for(alice),
        "bob": token_for(bob),
        "bob_id": bob.pk,
        "room_id": room.pk,
    }


async def admin_session(server: DaphneProcess) -> httpx.AsyncClient:
    """A browser-like session of `mod` logged in to the server's /admin/."""
    client = httpx.AsyncClient(base_url=server.http, timeout=10)
    await client.get("/admin/login/")
    response = await client.post(
        "/admin/login/?next=/admin/",
        data={
            "username": "mod",
            "password": "pw",
            "next": "/admin/",
            "csrfmiddlewaretoken": client.cookies["csrftoken"],
        },
    )
    assert response.status_code == 302, response.text[:500]
    return client


async def admin_action(
    client: httpx.AsyncClient, model: str, action: str, ids: list[int], reason: str = ""
) -> None:
    response = await client.post(
        f"/admin/chat/{model}/",
        data={
            "csrfmiddlewaretoken": client.cookies["csrftoken"],
            "action": action,
            "_selected_action": [str(i) for i in ids],
            "index": "0",
            "reason": reason,
        },
    )
    assert response.status_code == 302, response.text[:500]


async def test_a_message_hidden_in_the_admin_vanishes_from_every_open_connection(
    server, server_b, people
):
    """Connections on both servers get `message_deleted` for it; a later
    resume and REST history skip it; seqs go on from where they were."""
    alice = await Ws.connect(server.ws, token=people["alice"])
    bob = await Ws.connect(server_b.ws, token=people["bob"])
    await alice.join("general")
    await bob.join("general")
    bad = await alice.post("general", "buy cheap <b>pills</b>")
    await alice.post("general", "sorry")
    await bob.messages("general", 2)
    admin = await admin_session(server)
    await admin_action(admin, "message", "hide_selected", [bad["id"]], reason="spam")
    expected = {"type": "message_deleted", "room": "general", "id": bad["id"], "seq": bad["seq"]}
    assert await bob.recv_type("message_deleted") == expected
    assert await alice.recv_type("message_deleted") == expected

    late = await Ws.connect(server_b.ws, token=people["bob"])
    await late.join("general", since=0)
    assert [m["content"] for m in await late.messages("general", 1)] == ["sorry"]
    assert not [f for f in await late.quiet(0.5) if f["type"] == "message"]
    history = (await admin.get("/api/rooms/general/messages/")).json()["results"]
    assert [m["content"] for m in history] == ["sorry"]
    assert (await alice.post("general", "next"))["seq"] == 3
    row = await ModerationAction.objects.select_related("moderator").aget()
    assert (row.moderator.username, row.action, row.message_id, row.reason) == (
        "mod",
        "message_delete",
        bad["id"],
        "spam",
    )
    assert await Message.objects.filter(pk=bad["id"], is_deleted=True).aexists()
    for ws in (alice, bob, late):
        await ws.close()
    await admin.aclose()


async def test_a_ban_in_the_admin_kicks_every_connection_and_refuses_join_and_send(
    server, server_b, people
):
    alice = await Ws.connect(server.ws, token=people["alice"])
    bob_a = await Ws.connect(server.ws, token=people["bob"])
    bob_b = await Ws.connect(server_b.ws, token=people["bob"])
    for ws in (alice, bob_a, bob_b):
        assert (await ws.join("general"))["type"] == "joined"
    membership = await Membership.objects.aget(user_id=people["bob_id"], room_id=people["room_id"])
    admin = await admin_session(server_b)
    await admin_action(admin, "membership", "ban", [membership.pk], reason="flooding")
    kicked = {"type": "kicked", "room": "general", "reason": "flooding"}
    assert await bob_a.recv_type("kicked") == kicked
    assert await bob_b.recv_type("kicked") == kicked

    refused = await bob_a.join("general")
    assert (refused["type"], refused["code"]) == ("error", "FORBIDDEN")
    refused = await bob_b.post("general", "let me back in")
    assert (refused["type"], refused["code"]) == ("error", "FORBIDDEN")
    await alice.post("general", "bob is gone")
    for ws in (bob_a, bob_b):
        assert not [f for f in await ws.quiet(0.5) if f["type"] == "message"]
    assert await ModerationAction.objects.filter(action="ban").acount() == 1

    # Lifted from another process (a shell): bob may join and post again.
    await asyncio.to_thread(
        partial(manage_shell, redis_url=server.redis_url),
        "from django.contrib.auth import get_user_model as U; from chat import services;"
        "from chat.models import Room;"
        "services.member_unban(moderator=U().objects.get(username='mod'),"
        " room=Room.objects.get(slug='general'), user=U().objects.get(username='bob'))",
    )
    assert (await bob_a.join("general"))["type"] == "joined"
    assert (await bob_a.post("general", "I am back"))["type"] == "ack"
    for ws in (alice, bob_a, bob_b):
        await ws.close()
    await admin.aclose()


async def test_a_mute_refuses_the_next_send_at_once_while_reading_goes_on(server, server_b, people):
    """Muted from a shell in another process: bob's open connection is refused
    FORBIDDEN on its next send, and still receives the room."""
    alice = await Ws.connect(server.ws, token=people["alice"])
    bob = await Ws.connect(server_b.ws, token=people["bob"])
    await alice.join("general")
    await bob.join("general")
    assert (await bob.post("general", "before"))["type"] == "ack"
    await asyncio.to_thread(
        partial(manage_shell, redis_url=server.redis_url),
        "from django.contrib.auth import get_user_model as U; from chat import services;"
        "from chat.models import Room;"
        "services.member_mute(moderator=U().objects.get(username='mod'),"
        " room=Room.objects.get(slug='general'), user=U().objects.get(username='bob'),"
        " reason='cool down')",
    )
    refused = await bob.post("general", "during")
    assert (refused["type"], refused["code"]) == ("error", "FORBIDDEN")
    await alice.post("general", "you can still read this")
    contents = [m["content"] for m in await bob.messages("general", 2)]
    assert contents == ["before", "you can still read this"]
    assert not await Message.objects.filter(content="during").aexists()
    row = await ModerationAction.objects.aget()
    assert (row.action, row.reason) == ("mute", "cool down")
    await alice.close()
    await bob.close()
