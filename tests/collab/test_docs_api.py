"""The shared documents' REST API and wire format."""

import pytest
from pycrdt import Doc, Text

from chat.collab import protocol, services
from chat.models import Room


def edit(doc: Doc, text: str) -> bytes:
    before = doc.get_state()
    doc.get("content", type=Text).insert(0, text)
    return doc.get_update(before)


@pytest.fixture
def notes(general, alice):
    opened = services.document_open(user=alice, slug="general", name="notes")
    services.update_append(
        user=alice, room=opened.room, document_id=opened.document_id, data=edit(Doc(), "hello")
    )
    return opened


def test_a_rooms_documents_are_listed_and_one_reads_as_its_text(notes, api, bob):
    listed = api(bob).get("/api/rooms/general/docs/")
    assert listed.status_code == 200
    assert [d["name"] for d in listed.json()["results"]] == ["notes"]
    assert listed.json()["results"][0]["updated_at"].endswith("Z")
    assert listed.json()["next"] is None and listed.json()["previous"] is None
    one = api(bob).get("/api/rooms/general/docs/notes/")
    assert one.status_code == 200
    assert one.json()["name"] == "notes" and one.json()["text"] == "hello"


def test_a_private_room_is_not_found_to_a_stranger_as_an_unknown_one(secret, alice, api, bob):
    services.document_open(user=alice, slug="secret", name="plans")
    for path in (
        "/api/rooms/secret/docs/",
        "/api/rooms/secret/docs/plans/",
        "/api/rooms/nowhere/docs/",
        "/api/rooms/nowhere/docs/plans/",
    ):
        response = api(bob).get(path)
        assert response.status_code == 404, path
        assert response.json()["code"] == "NOT_FOUND", path
    assert api(alice).get("/api/rooms/secret/docs/plans/").json()["text"] == ""


def test_an_unknown_document_or_a_bad_name_is_not_found(general, api, alice):
    for name in ("missing", "not%20a%20slug"):
        response = api(alice).get(f"/api/rooms/general/docs/{name}/")
        assert response.status_code == 404
        assert response.json()["code"] == "NOT_FOUND"


def test_anonymous_requests_are_401(general, api):
    assert api().get("/api/rooms/general/docs/").status_code == 401


def test_the_schema_describes_the_documents(api, alice):
    schema = api(alice).get("/api/schema/", HTTP_ACCEPT="application/json").json()
    assert "/api/rooms/{slug}/docs/" in schema["paths"]
    assert "/api/rooms/{slug}/docs/{name}/" in schema["paths"]


def test_messages_read_as_y_websocket_writes_them():
    update = edit(Doc(), "x")
    message = protocol.parse(protocol.update_message(update))
    assert (message.kind, message.sync_type, message.payload) == (
        protocol.SYNC,
        protocol.SYNC_UPDATE,
        update,
    )
    entries = [protocol.AwarenessEntry(7, 3, '{"user":{"name":"ü"}}')]
    parsed = protocol.parse(protocol.awareness_message(entries))
    assert parsed.kind == protocol.AWARENESS
    assert protocol.parse_awareness(parsed.payload) == entries


@pytest.mark.parametrize(
    "data", [b"", b"\x00", b"\x00\x09\x01", b"\x00\x02\x05ab", b"\x02\x00", b"\x01\x05\x01"]
)
def test_a_malformed_message_is_a_protocol_error(data):
    with pytest.raises(protocol.ProtocolError):
        message = protocol.parse(data)
        if message.kind == protocol.AWARENESS:
            protocol.parse_awareness(message.payload)


def test_a_room_has_no_documents_until_one_is_opened(general, api, alice):
    assert api(alice).get("/api/rooms/general/docs/").json()["results"] == []
    assert Room.objects.get(slug="general").documents.count() == 0


def test_the_document_list_comes_a_page_at_a_time(general, api, alice):
    for i in range(5):
        services.document_open(user=alice, slug="general", name=f"d{i}")
    page = api(alice).get("/api/rooms/general/docs/?limit=2").json()
    names = [d["name"] for d in page["results"]]
    while page["next"]:
        page = api(alice).get(page["next"]).json()
        names += [d["name"] for d in page["results"]]
    assert names == [f"d{i}" for i in range(5)]
