"""
Nothing stored can break a shared document (contract §9), over real sockets
on real daphne processes, PostgreSQL and Redis: updates that do not decode or
apply, text frames, a fuzz of mutated frames, forged and oversized awareness,
and the quotas on document bytes, documents per room and room creation.
The clients are tests/live/docs_clients.RawDoc (pycrdt + websockets), which
can send what a stock client never would.
"""

import asyncio
import signal

import httpx
import pytest
from asgiref.sync import sync_to_async
from pycrdt import Doc, Map, Text

from chat.collab import protocol
from chat.models import Document, DocumentUpdate, Room

from .conftest import ServerProcess
from .docs_clients import RawDoc

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

# The update of the issue: nine bytes that no decoder accepts.
NINE_BYTES = bytes.fromhex("ffffffffffffffff01")


@pytest.fixture
def people(make_user, token_for):
    """alice, bob, carol and dave with API tokens, and the public room general."""
    users = {name: make_user(name) for name in ("alice", "bob", "carol", "dave")}
    Room.objects.create(slug="general", name="General")
    return {name: token_for(user) for name, user in users.items()} | {"users": users}


def rest(server: ServerProcess, token: str, path: str) -> httpx.Response:
    with httpx.Client(base_url=server.http, headers={"Authorization": f"Token {token}"}) as c:
        return c.get(path, timeout=10)


async def rest_text(server: ServerProcess, token: str, name: str, expected: str) -> str:
    """The document's text over REST once it is `expected` (or what it is after 10 s)."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        response = await sync_to_async(rest)(server, token, f"/api/rooms/general/docs/{name}/")
        assert response.status_code == 200, response.text
        text = response.json()["text"]
        if text == expected or asyncio.get_running_loop().time() > deadline:
            return text
        await asyncio.sleep(0.1)


def text_of(doc: RawDoc) -> str:
    return str(doc.ydoc.get("content", type=Text))


def stored_rows(name: str) -> list[bytes]:
    """The document's snapshot and logged updates, as stored."""
    document = Document.objects.get(room__slug="general", name=name)
    rows = [bytes(document.snapshot)] if document.snapshot else []
    updates = DocumentUpdate.objects.filter(document=document).order_by("seq")
    return rows + [bytes(data) for data in updates.values_list("data", flat=True)]


def all_apply(rows: list[bytes]) -> bool:
    """Whether every stored row applies, in order, to a fresh document."""
    ydoc: Doc = Doc()
    for row in rows:
        ydoc.apply_update(row)  # raises on a row that does not
    return True


def planted_parent_update() -> bytes:
    """A well-formed update whose text goes inside the item (1, 0) as if it
    were a type: it decodes on its own, and does not apply to a document in
    which client 1's first item is a character."""
    ydoc: Doc = Doc(client_id=1)
    ydoc.get("m", type=Map)["t"] = Text()
    before = ydoc.get_state()
    nested = ydoc.get("m", type=Map)["t"]
    nested += "evil"
    return ydoc.get_update(before)


async def test_an_update_that_does_not_decode_or_apply_closes_4400_and_is_stored_nowhere(
    server, server_b, people
):
    """alice types "hello"; carol sends the nine bytes of the issue, then an
    update that decodes but does not apply: each closes her socket with 4400,
    nothing of them is stored, REST on both processes still reads "hello",
    a newcomer on the other process opens it, and alice, on the same process
    as carol, keeps typing (the document's writer lives on)."""
    alice = await RawDoc.open(server, people["alice"], "general/notes")
    await alice.insert("hello")
    assert await rest_text(server, people["alice"], "notes", "hello") == "hello"
    rows_before = await sync_to_async(stored_rows)("notes")

    carol = await RawDoc.open(server, people["carol"], "general/notes")
    await carol.send(protocol.update_message(NINE_BYTES))
    assert await carol.closed() == 4400
    # As client 1, carol types a character, then sends an update that puts
    # text inside that character.
    carol = await RawDoc.open(server, people["carol"], "general/notes", ydoc=Doc(client_id=1))
    await carol.insert("!")
    await carol.send(protocol.update_message(planted_parent_update()))
    assert await carol.closed() == 4400

    await alice.insert(" world", index=5)
    assert await rest_text(server, people["alice"], "notes", "!hello world") == "!hello world"
    assert await rest_text(server_b, people["bob"], "notes", "!hello world") == "!hello world"
    bob = await RawDoc.open(server_b, people["bob"], "general/notes")
    assert text_of(bob) == "!hello world"
    rows = await sync_to_async(stored_rows)("notes")
    assert len(rows) == len(rows_before) + 2  # carol's "!" and alice's " world"
    assert await sync_to_async(all_apply)(rows)
    for client in (alice, bob):
        await client.close()


async def test_a_stored_row_that_does_not_decode_breaks_nobody(server, server_b, people):
    """Rows stored before updates were checked (the issue's nine bytes among
    good updates): REST reads the rest of the document and both processes
    open it, where an editor types on."""
    writer: Doc = Doc()
    text = writer.get("content", type=Text)
    good = []
    for part in ("one ", "two"):
        before = writer.get_state()
        text += part
        good.append(writer.get_update(before))

    def store() -> None:
        room = Room.objects.get(slug="general")
        document = Document.objects.create(room=room, name="old", last_seq=3)
        user = people["users"]["alice"]
        for seq, data in enumerate([good[0], NINE_BYTES, good[1]], start=1):
            DocumentUpdate.objects.create(document=document, seq=seq, data=data, user=user)

    await sync_to_async(store)()
    for proc in (server, server_b):
        assert await rest_text(proc, people["bob"], "old", "one two") == "one two"
        doc = await RawDoc.open(proc, people["bob"], "general/old")
        assert text_of(doc) == "one two"
        await doc.close()
    alice = await RawDoc.open(server_b, people["alice"], "general/old")
    await alice.insert("zero ")
    assert await rest_text(server, people["bob"], "old", "zero one two") == "zero one two"
    await alice.close()


async def test_a_text_frame_closes_with_4400_and_the_connection_is_let_go(
    daphnes, redis_url, people
):
    """Text on the binary protocol: 4400, never 1011. After 30 such sockets,
    SIGTERM finds no connection left to drain, and the log has no traceback."""
    server = daphnes(redis_url=redis_url)
    for i in range(30):
        doc = await RawDoc.open(server, people["alice"], "general/notes")
        await doc.send("hello" if i % 2 else "")
        assert await doc.closed() == 4400
    await asyncio.sleep(0.5)
    server.signal(signal.SIGTERM)
    server.wait_exit(30)
    log = server.log_text()
    assert "draining" not in log, log[-3000:]
    assert "Traceback" not in log, log[-5000:]
