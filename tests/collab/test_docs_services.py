"""Shared documents' storage: opening under the room's access rule, the
append-only log with its gap-free seq, limits and compaction."""

import pytest
from pycrdt import Doc, Text

from chat.collab import events, selectors, services
from chat.models import Document, DocumentUpdate, Membership
from django_realtime.errors import Forbidden, NotFound


def edit(doc: Doc, index: int, text: str) -> bytes:
    """What a Yjs client sends for one insert into the shared text."""
    before = doc.get_state()
    doc.get("content", type=Text).insert(index, text)
    return doc.get_update(before)


@pytest.fixture
def notes(general, alice):
    opened = services.document_open(user=alice, slug="general", name="notes")
    return opened


def append(user, opened, data, **kwargs):
    return services.update_append(
        user=user, room=opened.room, document_id=opened.document_id, data=data, **kwargs
    )


def text_of(opened) -> str:
    return selectors.document_text(document=Document.objects.get(pk=opened.document_id))


def test_opening_a_document_of_a_public_room_makes_the_user_a_member(general, bob):
    opened = services.document_open(user=bob, slug="general", name="notes")
    assert opened.can_edit
    assert Membership.objects.filter(room=general, user=bob).exists()
    assert Document.objects.get(pk=opened.document_id).name == "notes"


def test_a_stranger_a_banned_member_and_a_bad_name_are_refused(secret, general, alice, bob):
    with pytest.raises(NotFound):
        services.document_open(user=bob, slug="secret", name="notes")
    with pytest.raises(NotFound):
        services.document_open(user=bob, slug="nowhere", name="notes")
    with pytest.raises(NotFound):
        services.document_open(user=alice, slug="general", name="no/slug")
    Membership.objects.create(room=general, user=bob, is_banned=True)
    with pytest.raises(Forbidden):
        services.document_open(user=bob, slug="general", name="notes")
    assert not Document.objects.exists()


def test_updates_get_gap_free_seqs_and_ring_only_after_commit(
    notes, alice, django_capture_on_commit_callbacks, monkeypatch
):
    rung = []
    monkeypatch.setattr(events.bus, "send_sync", lambda group, event: rung.append(event))
    doc = Doc()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        seqs = [append(alice, notes, edit(doc, 0, word), origin="c1").seq for word in "abc"]
        assert rung == []  # nothing rings inside the transaction
    assert seqs == [1, 2, 3]
    assert len(callbacks) == 3
    assert [(e["seq"], e["last"]) for e in rung] == [(1, 1), (2, 2), (3, 3)]
    assert all(e["type"] == "doc.update" and e["origins"] == ["c1"] for e in rung)
    assert events.decode(rung[0]["updates"][0]) == bytes(DocumentUpdate.objects.get(seq=1).data)
    assert text_of(notes) == "cba"


def test_a_batch_is_stored_under_contiguous_seqs_and_rings_once(
    notes, general, alice, bob, carol, django_capture_on_commit_callbacks, monkeypatch
):
    """Several editors' updates stored together: in order, one doorbell
    carrying them all; a muted member's update in the batch is refused alone."""
    Membership.objects.create(room=general, user=carol, is_muted=True)
    rung = []
    monkeypatch.setattr(events.bus, "send_sync", lambda group, event: rung.append(event))
    doc = Doc()
    batch = [
        services.Pending(alice, edit(doc, 0, "a"), "c1"),
        services.Pending(carol, edit(Doc(), 0, "spam"), "c3"),
        services.Pending(bob, edit(doc, 1, "b"), "c2"),
        services.Pending(alice, edit(doc, 2, "c"), "c1"),
    ]
    with django_capture_on_commit_callbacks(execute=True):
        outcomes = services.updates_append(
            room=notes.room, document_id=notes.document_id, updates=batch
        )
    assert [getattr(o, "seq", None) for o in outcomes] == [1, None, 2, 3]
    assert isinstance(outcomes[1], services.Muted)
    assert len(rung) == 1
    assert (rung[0]["seq"], rung[0]["last"], rung[0]["origins"]) == (1, 3, ["c1", "c2", "c1"])
    assert text_of(notes) == "abc"
    assert list(DocumentUpdate.objects.values_list("seq", flat=True)) == [1, 2, 3]


def test_a_member_muted_or_banned_after_opening_is_refused_at_once(notes, general, bob):
    """Moderation done straight in the database (no event) still holds for
    the next update: the rule is asked as the update is stored."""
    opened = services.document_open(user=bob, slug="general", name="notes")
    assert append(bob, opened, edit(Doc(), 0, "ok")).seq == 1
    Membership.objects.filter(room=general, user=bob).update(is_muted=True)
    with pytest.raises(services.Muted):
        append(bob, opened, edit(Doc(), 0, "spam"))
    Membership.objects.filter(room=general, user=bob).update(is_banned=True)
    with pytest.raises(Forbidden):
        append(bob, opened, edit(Doc(), 0, "spam"))
    assert DocumentUpdate.objects.count() == 1


def test_a_muted_members_update_is_refused_and_not_stored(notes, general, bob):
    Membership.objects.create(room=general, user=bob, is_muted=True)
    muted = services.document_open(user=bob, slug="general", name="notes")
    assert not muted.can_edit
    with pytest.raises(services.Muted):
        append(bob, muted, edit(Doc(), 0, "spam"))
    assert not DocumentUpdate.objects.exists()


def test_an_update_over_the_limits_is_refused_with_nothing_stored(notes, alice, realtime):
    realtime.DOCS_MAX_UPDATE_BYTES = 100
    realtime.DOCS_MAX_DOCUMENT_BYTES = 150
    doc = Doc()
    with pytest.raises(services.UpdateTooLarge):
        append(alice, notes, edit(doc, 0, "x" * 200))
    append(alice, notes, edit(Doc(), 0, "y" * 60))
    with pytest.raises(services.DocumentFull):
        append(alice, notes, edit(Doc(), 0, "z" * 60))
    assert DocumentUpdate.objects.count() == 1
    assert Document.objects.get(pk=notes.document_id).last_seq == 1


def test_compaction_keeps_the_text_and_shrinks_the_log(notes, alice):
    doc = Doc()
    for i in range(50):
        append(alice, notes, edit(doc, i, "x"))
    before = Document.objects.get(pk=notes.document_id).stored_bytes
    result = services.document_compact(document_id=notes.document_id)
    assert result is not None and result.up_to == 50
    document = Document.objects.get(pk=notes.document_id)
    assert document.snapshot_seq == 50
    assert document.stored_bytes == result.bytes_after == len(bytes(document.snapshot))
    assert result.bytes_before == before > result.bytes_after
    assert not DocumentUpdate.objects.exists()
    assert text_of(notes) == "x" * 50
    # A process behind the snapshot gets the snapshot; one past it, the log.
    stored = selectors.updates_after(document_id=notes.document_id, after=10)
    assert [seq for seq, _ in stored.entries] == [50]
    append(alice, notes, edit(doc, 0, "y"))
    stored = selectors.updates_after(document_id=notes.document_id, after=50)
    assert [seq for seq, _ in stored.entries] == [51]
    assert services.document_compact(document_id=notes.document_id).up_to == 51
    assert text_of(notes) == "y" + "x" * 50


def test_an_update_stored_while_compacting_is_kept(notes, alice, monkeypatch):
    doc = Doc()
    for word in ("one ", "two "):
        append(alice, notes, edit(doc, len(str(doc.get("content", type=Text))), word))

    class Racing(Doc):
        def get_update(self, state=None):
            merged = super().get_update(state)
            # Another process stores an update between the merge and the swap.
            append(alice, notes, edit(doc, len(str(doc.get("content", type=Text))), "three"))
            return merged

    monkeypatch.setattr(services, "Doc", Racing)
    result = services.document_compact(document_id=notes.document_id)
    assert result is not None and result.up_to == 2
    assert list(DocumentUpdate.objects.values_list("seq", flat=True)) == [3]
    assert text_of(notes) == "one two three"


def test_a_compaction_that_lost_the_race_changes_nothing(notes, alice, monkeypatch):
    doc = Doc()
    append(alice, notes, edit(doc, 0, "a"))

    class Racing(Doc):
        def get_update(self, state=None):
            merged = super().get_update(state)
            monkeypatch.undo()
            assert services.document_compact(document_id=notes.document_id) is not None
            return merged

    monkeypatch.setattr(services, "Doc", Racing)
    assert services.document_compact(document_id=notes.document_id) is None
    assert Document.objects.get(pk=notes.document_id).snapshot_seq == 1
    assert text_of(notes) == "a"
