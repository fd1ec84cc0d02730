"""A process's open document (chat.collab.hub): its writer stores the
updates its editors have waiting together, and forwards only what committed."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from pycrdt import Doc, Text

from chat.collab import protocol, services
from chat.collab.hub import LiveDocument
from chat.models import DocumentUpdate, Membership

pytestmark = pytest.mark.django_db(transaction=True)


class Editor:
    """A connection as the hub sees it, keeping what it is sent."""

    def __init__(self, name: str, user):
        self.channel_name = name
        self.user = user
        self.doc: Doc = Doc()

    async def send_bytes(self, data: bytes) -> None:
        message = protocol.parse(data)
        if message.kind == protocol.SYNC and message.sync_type == protocol.SYNC_UPDATE:
            self.doc.apply_update(message.payload)

    async def renew(self) -> None:
        """No per-user slot to keep here."""

    def text(self) -> str:
        return str(self.doc.get("content", type=Text))


def edit(doc: Doc, text: str) -> bytes:
    before = doc.get_state()
    content = doc.get("content", type=Text)
    content.insert(len(content), text)
    return doc.get_update(before)


async def until(check, timeout: float = 5.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if check():
            return True
        await asyncio.sleep(0.02)
    return check()


async def test_waiting_updates_are_stored_together_and_every_editor_gets_them(
    general, alice, bob, carol, monkeypatch
):
    """Twenty updates sent at once by two editors: far fewer transactions
    than updates, seqs 1…20 in each editor's order, and a third editor (and
    each sender) ends with all of it; a muted member's update is dropped."""
    opened = await sync_to_async(services.document_open)(user=alice, slug="general", name="n")
    await sync_to_async(Membership.objects.create)(room=general, user=carol, is_muted=True)
    calls = []
    real = services.updates_append

    def counted(**kwargs):
        calls.append(len(kwargs["updates"]))
        return real(**kwargs)

    monkeypatch.setattr(services, "updates_append", counted)
    live = LiveDocument(document_id=opened.document_id, room=opened.room)
    await live.start()
    try:
        a, b, c = Editor("a", alice), Editor("b", bob), Editor("c", carol)
        for editor in (a, b, c):
            await live.add(editor, last_seq=0)
        mine, theirs = Doc(), Doc()
        sends = [live.submit(a, edit(mine, f"a{i};")) for i in range(10)]
        sends += [live.submit(b, edit(theirs, f"b{i};")) for i in range(10)]
        await asyncio.gather(*sends)
        with pytest.raises(services.Muted):
            await live.submit(c, edit(Doc(), "spam;"))
        assert sum(calls) == 21 and len(calls) < 21
        seqs = await sync_to_async(list)(
            DocumentUpdate.objects.order_by("seq").values_list("seq", flat=True)
        )
        assert seqs == list(range(1, 21))
        expected = str(live.ydoc.get("content", type=Text))
        assert sorted(expected.rstrip(";").split(";")) == sorted(
            [f"a{i}" for i in range(10)] + [f"b{i}" for i in range(10)]
        )
        assert await until(lambda: c.text() == expected), c.text()
        # each sender gets the other's edits (and may get its own back: a no-op)
        a.doc.apply_update(mine.get_update())
        b.doc.apply_update(theirs.get_update())
        assert await until(lambda: a.text() == b.text() == expected)
    finally:
        await live.close()


async def test_a_bad_update_in_a_batch_is_refused_and_the_writer_goes_on(general, alice, bob):
    """In one batch: alice's good update, bob's nine bytes that do not decode,
    alice's next update (which needs her first). Bob's alone is refused
    (UpdateInvalid), nothing of it stored; the writer stores what comes next."""
    opened = await sync_to_async(services.document_open)(user=alice, slug="general", name="n")
    live = LiveDocument(document_id=opened.document_id, room=opened.room)
    await live.start()
    try:
        a, b = Editor("a", alice), Editor("b", bob)
        for editor in (a, b):
            await live.add(editor, last_seq=0)
        mine = Doc()
        outcomes = await asyncio.gather(
            live.submit(a, edit(mine, "one;")),
            live.submit(b, bytes.fromhex("ffffffffffffffff01")),
            live.submit(a, edit(mine, "two;")),
            return_exceptions=True,
        )
        assert outcomes[0] is None and outcomes[2] is None
        assert isinstance(outcomes[1], services.UpdateInvalid)
        await live.submit(b, edit(Doc(), "three;"))
        stored = await sync_to_async(list)(DocumentUpdate.objects.values_list("user", flat=True))
        assert sorted(stored) == sorted([alice.pk, alice.pk, bob.pk])
        assert await until(lambda: "one;two;" in b.text() and "three;" in a.text())
    finally:
        await live.close()


async def test_an_editor_speaks_only_for_its_own_awareness_clients(general, alice, bob, carol):
    """bob's entry under alice's client id (a spoofed name, then a removal)
    reaches nobody; his own does."""
    opened = await sync_to_async(services.document_open)(user=alice, slug="general", name="n")
    live = LiveDocument(document_id=opened.document_id, room=opened.room)
    await live.start()
    seen: list[protocol.AwarenessEntry] = []

    class Watcher(Editor):
        async def send_bytes(self, data: bytes) -> None:
            message = protocol.parse(data)
            if message.kind == protocol.AWARENESS:
                seen.extend(protocol.parse_awareness(message.payload))

    try:
        a, b, c = Editor("a", alice), Editor("b", bob), Watcher("c", carol)
        for editor in (a, b, c):
            await live.add(editor, last_seq=0)

        def entry(client_id: int, clock: int, state: str) -> bytes:
            return protocol.awareness_update([protocol.AwarenessEntry(client_id, clock, state)])

        await live.aware(a, entry(11, 1, '{"name": "alice"}'))
        await live.aware(b, entry(11, 2, '{"name": "mallory"}'))
        await live.aware(b, entry(11, 3, "null"))
        await live.aware(b, entry(22, 1, '{"name": "bob"}'))
        assert [(e.client_id, e.state) for e in seen] == [
            (11, '{"name": "alice"}'),
            (22, '{"name": "bob"}'),
        ]
        assert live.awareness[11].entry.state == '{"name": "alice"}'
    finally:
        await live.close()
