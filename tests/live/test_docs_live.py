"""
Shared documents (contract §9) against two real daphne processes on PostgreSQL
and Redis, edited by the stock npm clients `yjs` + `y-websocket` under Node
(tests/js/docs_driver.mjs): what editors see, and what REST returns.
"""

import asyncio
import os
import re
import secrets
import signal
import time

import httpx
import pytest
import websockets
from asgiref.sync import sync_to_async

from chat.models import Document, DocumentUpdate, Membership, Room

from .conftest import METRICS_HEADERS, SERVER_KINDS, ServerProcess, slow_client
from .docs_clients import NodeDocs, node_ready

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]


@pytest.fixture
async def node():
    reason = node_ready()
    if reason is not None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(reason)
    docs = await NodeDocs().start()
    yield docs
    await docs.stop()


@pytest.fixture
def people(make_user, token_for):
    """alice, bob and carol with API tokens, and the public room general."""
    users = {name: make_user(name) for name in ("alice", "bob", "carol")}
    Room.objects.create(slug="general", name="General")
    return {name: token_for(user) for name, user in users.items()} | {"users": users}


def rest_doc(server: ServerProcess, token: str, room: str, name: str) -> httpx.Response:
    with httpx.Client(base_url=server.http, headers={"Authorization": f"Token {token}"}) as c:
        return c.get(f"/api/rooms/{room}/docs/{name}/", timeout=10)


async def synced(node: NodeDocs, *ids: str) -> None:
    for id in ids:
        reply = await node.call("wait_synced", id=id)
        assert reply["ok"], f"{id} never synced: {reply}"


async def same_text(node: NodeDocs, expected: str, *ids: str) -> None:
    for id in ids:
        reply = await node.call("wait_text", id=id, text=expected)
        assert reply["text"] == expected, f"{id} has {reply['text']!r}"


async def converged(node: NodeDocs, *ids: str, timeout: float = 30) -> str:
    """The text every client in `ids` ends with (failing if they never agree)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        texts = [(await node.call("text", id=id))["text"] for id in ids]
        if len(set(texts)) == 1 or asyncio.get_running_loop().time() > deadline:
            assert len(set(texts)) == 1, f"never converged: {texts}"
            return texts[0]
        await asyncio.sleep(0.2)


async def test_concurrent_edits_on_two_processes_converge(server, server_b, people, node):
    """alice on one process and bob on the other type at once; both end with
    the same text holding every keystroke, and REST on either process says so."""
    await node.open("a", ws=server.ws, room="general", name="notes", token=people["alice"])
    await node.open("b", ws=server_b.ws, room="general", name="notes", token=people["bob"])
    await synced(node, "a", "b")
    for i in range(20):
        await asyncio.gather(
            node.call("insert", id="a", index=0, text=f"A{i:02};"),
            node.call("insert", id="b", text=f"B{i:02};"),
        )
    text = await converged(node, "a", "b")
    assert sorted(text.rstrip(";").split(";")) == sorted(
        [f"A{i:02}" for i in range(20)] + [f"B{i:02}" for i in range(20)]
    )
    for proc in (server, server_b):
        response = await sync_to_async(rest_doc)(proc, people["carol"], "general", "notes")
        assert response.status_code == 200
        assert response.json()["text"] == text
        assert response.json()["name"] == "notes"


async def test_edits_made_offline_merge_when_the_client_reconnects(server, server_b, people, node):
    await node.open("a", ws=server.ws, room="general", name="offline", token=people["alice"])
    await node.open("b", ws=server_b.ws, room="general", name="offline", token=people["bob"])
    await synced(node, "a", "b")
    await node.call("insert", id="a", text="start.")
    await same_text(node, "start.", "b")
    await node.call("disconnect", id="a")
    await node.call("insert", id="a", text=" alice offline.")
    await node.call("insert", id="b", index=0, text="bob online. ")
    await same_text(node, "bob online. start.", "b")
    assert (await node.call("text", id="a"))["text"] == "start. alice offline."
    await node.call("connect", id="a")
    await synced(node, "a")
    await same_text(node, "bob online. start. alice offline.", "a", "b")


async def test_a_late_joiner_gets_the_whole_document(server, server_b, people, node):
    await node.open("a", ws=server.ws, room="general", name="late", token=people["alice"])
    await synced(node, "a")
    for word in ("one ", "two ", "three"):
        await node.call("insert", id="a", text=word)
    await node.open("c", ws=server_b.ws, room="general", name="late", token=people["carol"])
    await synced(node, "c")
    await same_text(node, "one two three", "c")


async def test_a_server_restarted_in_the_middle_loses_nothing(
    server_b, people, node, daphnes, redis_url
):
    """alice's server goes down while she types; she reconnects when it is
    back, and bob (on the other process) and REST end with all of it."""
    restarting = daphnes(redis_url=redis_url)
    await node.open("a", ws=restarting.ws, room="general", name="restart", token=people["alice"])
    await node.open("b", ws=server_b.ws, room="general", name="restart", token=people["bob"])
    await synced(node, "a", "b")
    await node.call("insert", id="a", text="before;")
    await same_text(node, "before;", "b")
    restarting.stop()
    await node.call("insert", id="a", text="while down;")
    await node.call("insert", id="b", index=0, text="bob;")
    port = restarting.port
    daphnes(redis_url=redis_url, port=port)
    await same_text(node, "bob;before;while down;", "a", "b")
    response = await sync_to_async(rest_doc)(server_b, people["carol"], "general", "restart")
    assert response.json()["text"] == "bob;before;while down;"


async def test_a_stranger_and_an_unknown_room_are_closed_with_4404(server, people, node):
    await sync_to_async(Room.objects.create)(slug="secret", name="Secret", is_private=True)
    await node.open("s", ws=server.ws, room="secret", name="notes", token=people["carol"])
    await node.open("u", ws=server.ws, room="nowhere", name="notes", token=people["carol"])
    for id in ("s", "u"):
        reply = await node.call("wait_close", id=id)
        assert reply["ok"] and reply["closes"][0]["code"] == 4404, reply
        await node.call("close", id=id)
    assert not await sync_to_async(Document.objects.filter(room__slug="secret").exists)()


async def test_no_credentials_are_closed_with_4401(server, people, node):
    await node.open("x", ws=server.ws, room="general", name="notes", token="")
    reply = await node.call("wait_close", id="x")
    assert reply["ok"] and reply["closes"][0]["code"] == 4401, reply
    await node.call("close", id="x")


async def test_a_muted_members_updates_change_nothing(server, server_b, people, node):
    room = await sync_to_async(Room.objects.get)(slug="general")
    await sync_to_async(Membership.objects.create)(
        room=room, user=people["users"]["bob"], is_muted=True
    )
    await node.open("a", ws=server.ws, room="general", name="muted", token=people["alice"])
    await node.open("b", ws=server_b.ws, room="general", name="muted", token=people["bob"])
    await synced(node, "a", "b")
    await node.call("insert", id="b", text="spam from bob;")
    await node.call("insert", id="a", text="alice;")
    await same_text(node, "alice;", "a")
    # bob reads alice's edit beside his own, which only his client has (where
    # the two go depends on the clients' random Yjs ids)…
    reply = await node.call("wait_includes", id="b", parts=["spam from bob;", "alice;"])
    assert reply["ok"], reply
    assert len(reply["text"]) == len("spam from bob;alice;"), reply
    # …but nobody else ever sees his.
    await node.open("c", ws=server_b.ws, room="general", name="muted", token=people["carol"])
    await synced(node, "c")
    await same_text(node, "alice;", "c")
    response = await sync_to_async(rest_doc)(server, people["carol"], "general", "muted")
    assert response.json()["text"] == "alice;"
    assert (
        await sync_to_async(DocumentUpdate.objects.filter(user=people["users"]["bob"]).count)() == 0
    )


async def test_editors_see_each_other_across_processes_and_leave_when_they_go(
    server, server_b, people, node
):
    await node.open(
        "a", ws=server.ws, room="general", name="aware", token=people["alice"], user="alice"
    )
    await node.open(
        "b", ws=server_b.ws, room="general", name="aware", token=people["bob"], user="bob"
    )
    await synced(node, "a", "b")
    assert (await node.call("wait_peers", id="a", peers=["bob"]))["ok"]
    assert (await node.call("wait_peers", id="b", peers=["alice"]))["ok"]
    await node.call("close", id="b")
    reply = await node.call("wait_peers", id="a", peers=[])
    assert reply["ok"], reply


@pytest.mark.slow
async def test_an_editor_whose_server_dies_leaves_every_awareness_list_within_60_s(
    server_b, people, node, daphnes, redis_url
):
    """alice's server is killed (SIGKILL: no disconnect runs). bob, on the
    other process, stops listing her within the contract's 60 s (default
    settings), and carol, opening the document there after those 60 s, is
    never shown her: the survivor forgot her too, not only bob's client."""
    doomed = daphnes(redis_url=redis_url)
    await node.open(
        "a", ws=doomed.ws, room="general", name="crash", token=people["alice"], user="alice"
    )
    await node.open(
        "b", ws=server_b.ws, room="general", name="crash", token=people["bob"], user="bob"
    )
    await synced(node, "a", "b")
    assert (await node.call("wait_peers", id="b", peers=["alice"]))["ok"]
    assert (await node.call("wait_peers", id="a", peers=["bob"]))["ok"]
    # Her client stays: it says nothing (the server is gone), and keeps trying
    # to reconnect to a port nobody listens on.
    doomed.signal(signal.SIGKILL)
    killed = time.monotonic()
    assert doomed.proc is not None
    doomed.wait_exit(10)
    reply = await node.call("wait_peers", id="b", peers=[], timeout=60)
    assert reply["ok"], reply
    assert time.monotonic() - killed <= 60
    # Past the 60 s, a newcomer is not told of her either (a stale entry the
    # server still held would stay in carol's list for 30 s: her client's own
    # timeout).
    await asyncio.sleep(max(0.0, 60 - (time.monotonic() - killed)))
    await node.open(
        "c", ws=server_b.ws, room="general", name="crash", token=people["carol"], user="carol"
    )
    await synced(node, "c")
    reply = await node.call("wait_peers", id="c", peers=["bob"], timeout=10)
    assert reply["ok"], reply
    await asyncio.sleep(1)
    assert (await node.call("peers", id="c"))["peers"] == ["bob"]


@pytest.mark.parametrize("kind", SERVER_KINDS)
async def test_an_editor_that_stops_reading_is_closed_and_slows_nobody(
    daphnes, redis_server, people, node, kind
):
    """A document's socket that stops reading while another editor types a
    lot: it is closed with 4413 once its output passes the cap (under
    uvicorn, whose send waits for a full socket, the document's hand-out
    would otherwise wait for it), and the editor that reads sees every
    keystroke at once."""
    server = daphnes(
        kind=kind,
        redis_url=redis_server.url,
        # 8 MB of edits: more than the kernel buffers of a socket on loopback
        # (and than one user's DOCS_USER_BYTES_RATE, off here).
        env={
            "WS_MAX_PENDING_OUTPUT_BYTES": "65536",
            "DOCS_MAX_DOCUMENT_BYTES": str(64 << 20),
            "DOCS_USER_BYTES_RATE": "off",
        },
    )
    await node.open("a", ws=server.ws, room="general", name="notes", token=people["alice"])
    await synced(node, "a")
    stalled = await slow_client(server, people["carol"], path="/ws/docs/general/notes")
    await asyncio.sleep(0.5)  # carol is an editor before bob: first in the hand-out
    await node.open("b", ws=server.ws, room="general", name="notes", token=people["bob"])
    await synced(node, "b")
    chunks = [secrets.token_urlsafe(30000) for _ in range(200)]  # random: no compression
    for chunk in chunks:
        await node.call("insert", id="a", text=chunk)
    expected = "".join(chunks)
    deadline = asyncio.get_running_loop().time() + 10
    while (got := (await node.call("text", id="b"))["text"]) != expected:
        assert asyncio.get_running_loop().time() < deadline, (
            f"bob has {len(got)} of {len(expected)} characters 10 s after the last edit"
        )
        await asyncio.sleep(0.2)
    # carol reads again: what was queued for her, then the close.
    code = None
    try:
        while True:
            await asyncio.wait_for(stalled.recv(), 30)
    except websockets.ConnectionClosed as closed:
        code = closed.rcvd.code if closed.rcvd else None
    assert code == 4413
    async with httpx.AsyncClient(timeout=10) as client:
        metrics = (await client.get(f"{server.http}/metrics", headers=METRICS_HEADERS)).text
    assert re.search(r"^realtime_output_overflows_total [1-9]", metrics, re.M)


async def test_document_sockets_count_against_the_per_user_connection_cap(
    daphnes, redis_server, people
):
    """WS_MAX_CONNECTIONS_PER_USER counts /ws/ and document sockets together:
    with a cap of 2, alice's /ws/ and one document socket are open, a second
    document socket is closed with 4429, and once one closes she may open it."""
    server = daphnes(redis_url=redis_server.url, env={"WS_MAX_CONNECTIONS_PER_USER": "2"})
    headers = {"Authorization": f"Token {people['alice']}"}
    doc_url = server.ws.rstrip("/") + "/docs/general/notes"
    main = await websockets.connect(server.ws, additional_headers=headers)
    first = await websockets.connect(doc_url, additional_headers=headers)
    await asyncio.wait_for(first.recv(), 10)  # the server's sync step 1: it is open
    extra = await websockets.connect(doc_url, additional_headers=headers)
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(extra.recv(), 10)
    assert closed.value.rcvd.code == 4429
    assert closed.value.rcvd.reason == "policy: at most 2 connections"
    await main.close()
    await asyncio.sleep(0.5)  # its slot is given back
    again = await websockets.connect(doc_url, additional_headers=headers)
    await asyncio.wait_for(again.recv(), 10)
    for conn in (first, again):
        await conn.close()
