"""
Nothing stored can break a shared document (contract §9), over real sockets
on real daphne processes, PostgreSQL and Redis: updates that do not decode or
apply, text frames, a fuzz of mutated frames, forged and oversized awareness,
and the quotas on document bytes, documents per room and room creation.
The clients are tests/live/docs_clients.RawDoc (pycrdt + websockets), which
can send what a stock client never would.
"""

import asyncio
import json
import random
import signal

import httpx
import pytest
import websockets
from asgiref.sync import sync_to_async
from pycrdt import Doc, Map, Text

from chat.collab import protocol
from chat.collab.protocol import AwarenessEntry
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


# --- a fuzz ------------------------------------------------------------------------------
FUZZ_FRAMES = 5000


class Fuzzer:
    """Frames for one editor: real edits of its own document, and frames
    made from them by flipping, cutting and replacing bytes, or none of
    them at all (random bytes, text)."""

    def __init__(self, rng: random.Random, ydoc: Doc):
        self.rng = rng
        self.ydoc = ydoc  # what the socket syncs from the server
        # Edits come from a document of their own, never synced: its updates
        # need nothing else, and pycrdt once never returned from get_update
        # on a state synced from the fuzzed server (the next thing to study).
        self.local = Doc()
        self.valid: list[bytes] = []

    def edit(self) -> bytes:
        """A keystroke; after a mutated update, its own pycrdt may panic on
        the text: it then starts again from an empty document (and syncs)."""
        before = self.local.get_state()
        try:
            text = self.local.get("content", type=Text)
            text.insert(self.rng.randint(0, len(text)), self.rng.choice(["a", "bc", "é", " "]))
        except BaseException as exc:
            if type(exc).__name__ != "PanicException":
                raise
            self.local = Doc()
            return self.awareness()
        message = protocol.update_message(self.local.get_update(before))
        self.valid.append(message)
        return message

    def awareness(self) -> bytes:
        state = json.dumps({"user": {"name": "fuzz", "n": self.rng.random()}})
        entry = AwarenessEntry(self.local.client_id, self.rng.randint(1, 10**6), state)
        message = protocol.awareness_message([entry])
        self.valid.append(message)
        return message

    def frame(self) -> bytes | str:
        rng = self.rng
        r = rng.random()
        if r < 0.35 or not self.valid:
            return self.edit()
        if r < 0.42:
            return self.awareness()
        base = bytearray(rng.choice(self.valid[-50:]))
        if r < 0.62:  # bytes flipped
            for _ in range(rng.randint(1, 3)):
                base[rng.randrange(len(base))] = rng.randrange(256)
            return bytes(base)
        if r < 0.72:  # cut short
            return bytes(base[: rng.randrange(len(base))])
        if r < 0.82:  # a well-framed update of random bytes
            return protocol.update_message(rng.randbytes(rng.randint(0, 64)))
        if r < 0.86:  # a length prefix far past the frame
            return bytes([0, 2, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F]) + rng.randbytes(8)
        if r < 0.93:
            return rng.randbytes(rng.randint(0, 48))
        return "".join(chr(rng.randint(32, 0x2FF)) for _ in range(rng.randint(0, 20)))


# About 20 s alone; one CI run spent over 120 s with the test's own pycrdt
# client building an edit (Doc.get_update) on a document state the fuzz had
# led to: room for that while its cause is looked into.
@pytest.mark.timeout(360)
async def test_a_fuzz_of_5000_frames_leaves_every_stored_row_readable(
    daphnes, redis_server, people
):
    """Four editors send 5,000 frames between them: real edits, and frames
    made from them by byte flips, truncation and random bytes, plus text
    frames. Each socket the server closes is closed with 4400 or 1009
    (never 1011, never without a close frame) and the editor reconnects and
    syncs. Afterwards every stored row applies, REST reads the document on
    both processes, the other process opens it with the same text, and
    SIGTERM finds no connection left registered, with no traceback logged.
    (pycrdt's updates carry the document's whole delete set, so the byte
    quota, tested on its own below, is off here.)"""
    # Two processes of its own on a Redis of its own: alone it takes ~20 s,
    # while beside the session's long-running servers two full-suite runs
    # failed it (one stuck in its own pycrdt client); nothing shared now.
    server = daphnes(redis_url=redis_server.url, env={"DOCS_USER_BYTES_RATE": "off"})
    server_b = daphnes(redis_url=redis_server.url)
    sent = 0
    codes: list[int | None] = []
    reasons: set[str] = set()

    async def editor(name: str, seed: int) -> None:
        nonlocal sent
        fuzzer = Fuzzer(random.Random(seed), Doc())
        while sent < FUZZ_FRAMES:
            doc = await RawDoc.open(server, people[name], "general/fuzz", ydoc=fuzzer.ydoc)
            while sent < FUZZ_FRAMES:
                burst = [fuzzer.frame() for _ in range(fuzzer.rng.randint(1, 8))]
                for frame in burst:
                    try:
                        await doc.send(frame)
                    except websockets.ConnectionClosed:
                        break  # closed by an earlier frame: the probe says how
                    sent += 1
                code = await doc.probe()
                if code is not None:
                    codes.append(code)
                    reasons.add(f"{code} {doc.reason}")
                    break
                if doc.ydoc is not fuzzer.ydoc:  # pycrdt panicked on one side
                    fuzzer.ydoc = Doc()
                    break  # a fresh document, synced on a new socket
            await doc.close()

    names = ["alice", "bob", "carol", "dave"]
    await asyncio.gather(*(editor(name, seed) for seed, name in enumerate(names)))
    assert sent >= FUZZ_FRAMES
    assert len(codes) > 100, codes  # most bursts hold a bad frame
    assert set(codes) <= {4400, 1009}, [r for r in reasons if not r.startswith("4400")]
    assert await sync_to_async(all_apply)(await sync_to_async(stored_rows)("fuzz"))
    texts = []
    for proc in (server, server_b):
        response = await sync_to_async(rest)(proc, people["bob"], "/api/rooms/general/docs/fuzz/")
        assert response.status_code == 200
        texts.append(response.json()["text"])
    assert texts[0] == texts[1] != ""
    late = await RawDoc.open(server_b, people["carol"], "general/fuzz")
    assert text_of(late) == texts[0]
    await late.close()
    await asyncio.sleep(0.5)
    server.signal(signal.SIGTERM)
    server.wait_exit(30)
    log = server.log_text()
    assert "draining" not in log, log[-3000:]
    assert "Traceback" not in log, log[-5000:]


# --- awareness -------------------------------------------------------------------------
def aware(client_id: int, clock: int, name: str | None, pad: int = 0) -> bytes:
    state = "null" if name is None else json.dumps({"user": {"name": name}, "pad": "x" * pad})
    return protocol.awareness_message([AwarenessEntry(client_id, clock, state)])


def entries(messages: list[protocol.Message]) -> list[AwarenessEntry]:
    return [
        entry
        for message in messages
        if message.kind == protocol.AWARENESS
        for entry in protocol.parse_awareness(message.payload)
    ]


async def test_awareness_relays_only_the_senders_own_entries(server, server_b, people):
    """carol (alice's process) and dave (bob's) send entries under alice's
    client id, a spoofed name and a removal of her cursor: bob never gets
    them, while their own entries reach him."""
    alice = await RawDoc.open(server, people["alice"], "general/aware")
    bob = await RawDoc.open(server_b, people["bob"], "general/aware")
    carol = await RawDoc.open(server, people["carol"], "general/aware")
    dave = await RawDoc.open(server_b, people["dave"], "general/aware")
    alice_id = alice.ydoc.client_id
    await alice.send(aware(alice_id, 1, "alice"))
    seen = entries(await bob.received(1.0))
    assert [e.state for e in seen if e.client_id == alice_id] == [
        '{"user": {"name": "alice"}, "pad": ""}'
    ]
    for forger in (carol, dave):
        await forger.send(aware(alice_id, 5, "mallory"))
        await forger.send(aware(alice_id, 6, None))
        await forger.send(aware(forger.ydoc.client_id, 1, "honest"))
    seen = entries(await bob.received(1.5))
    assert not [e for e in seen if e.client_id == alice_id], seen
    assert {e.client_id for e in seen} == {carol.ydoc.client_id, dave.ydoc.client_id}
    for client in (alice, bob, carol, dave):
        assert await client.probe() is None
        await client.close()


async def test_awareness_is_bounded_in_size_and_rate(server, server_b, people):
    """200 awareness messages at once reach the other editors at most
    DOCS_AWARENESS_RATE (20 a second) times, the sender staying open; one
    over DOCS_AWARENESS_MAX_BYTES closes its socket with 1009."""
    bob = await RawDoc.open(server_b, people["bob"], "general/busy")
    carol = await RawDoc.open(server, people["carol"], "general/busy")
    me = carol.ydoc.client_id
    for clock in range(1, 201):
        await carol.send(aware(me, clock, "carol", pad=1000))
    relayed = [e for e in entries(await bob.received(1.5)) if e.client_id == me]
    assert 1 <= len(relayed) <= 20, len(relayed)
    assert await carol.probe() is None
    await carol.send(aware(me, 500, "carol", pad=9000))
    assert await carol.closed() == 1009
    await bob.close()


# --- quotas ------------------------------------------------------------------------------
async def test_quotas_refuse_past_them_and_store_nothing(daphnes, redis_url, people):
    """With 20,000 bytes a minute, two documents a room and three rooms an
    hour: alice's second 15,000-character paste closes 4429 and is not
    stored; a third document closes 4429 and is not created; a fourth room
    is 429 with Retry-After and not created. The lists come a page at a time."""
    server = daphnes(
        redis_url=redis_url,
        env={
            "DOCS_USER_BYTES_RATE": "20000/min",
            "DOCS_MAX_PER_ROOM": "2",
            "CHAT_ROOM_CREATE_RATE": "3/h",
        },
    )
    alice = await RawDoc.open(server, people["alice"], "general/q1")
    await alice.insert("a" * 15000)
    assert len(await rest_text(server, people["bob"], "q1", "a" * 15000)) == 15000
    await alice.insert("b" * 15000)
    assert await alice.closed() == 4429
    assert await rest_text(server, people["bob"], "q1", "a" * 15000) == "a" * 15000
    count = DocumentUpdate.objects.filter(document__name="q1").count
    assert await sync_to_async(count)() == 1

    second = await RawDoc.open(server, people["bob"], "general/q2")
    with pytest.raises(websockets.ConnectionClosed) as refused:
        await RawDoc.open(server, people["bob"], "general/q3")
    assert refused.value.rcvd.code == 4429
    assert refused.value.rcvd.reason == "policy: at most 2 documents in a room"
    names = Document.objects.filter(room__slug="general").values_list("name", flat=True)
    assert sorted(await sync_to_async(list)(names)) == ["q1", "q2"]
    await second.close()

    def create_rooms() -> list[httpx.Response]:
        headers = {"Authorization": f"Token {people['alice']}"}
        with httpx.Client(base_url=server.http, headers=headers, timeout=10) as client:
            return [
                client.post("/api/rooms/", json={"slug": f"mine-{i}", "name": f"Mine {i}"})
                for i in range(4)
            ]

    made = await sync_to_async(create_rooms)()
    assert [r.status_code for r in made] == [201, 201, 201, 429]
    assert int(made[3].headers["Retry-After"]) > 0
    assert not await sync_to_async(Room.objects.filter(slug="mine-3").exists)()

    rooms = await sync_to_async(rest)(server, people["bob"], "/api/rooms/?limit=2")
    assert len(rooms.json()["results"]) == 2 and rooms.json()["next"]
    docs = await sync_to_async(rest)(server, people["bob"], "/api/rooms/general/docs/?limit=1")
    assert [d["name"] for d in docs.json()["results"]] == ["q1"] and docs.json()["next"]
