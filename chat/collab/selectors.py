"""
Provides the shared documents' reads: a room's documents (behind the room's
one access rule, chat.selectors.room_access_by_slug), a document's stored
state, the log between two seqs and the document's text.
"""

import logging
from dataclasses import dataclass

from django.core.validators import slug_re
from django.db.models import QuerySet
from pycrdt import Doc, Text

from django_realtime.errors import ClientError, Forbidden, NotFound
from django_realtime.types import User

from ..models import Document, DocumentUpdate, Membership, Room
from ..selectors import access_rule, one_or_none, room_access_by_slug

logger = logging.getLogger(__name__)

# The shared text a stock editor binds (`ydoc.getText("content")`).
TEXT_NAME = "content"


def check_name(name: object) -> str:
    """A document's name is a slug; anything else names no document."""
    if not isinstance(name, str) or len(name) > 64 or not slug_re.match(name):
        raise NotFound(f"no document {name!r}")
    return name


def documents_of(*, user: User, slug: str) -> QuerySet[Document]:
    """The documents of a room the user may read (NOT_FOUND otherwise)."""
    room = room_access_by_slug(user=user, slug=slug).room
    return Document.objects.filter(room=room).order_by("name")


def document_get(*, user: User, slug: str, name: object) -> Document:
    """One document of a room the user may read (NOT_FOUND otherwise)."""
    room = room_access_by_slug(user=user, slug=slug).room
    document = one_or_none(Document.objects.filter(room=room, name=check_name(name)))
    if document is None:
        raise NotFound(f"no document {name!r} in {slug!r}")
    return document


def who_may_edit(*, room: Room, users: list[User]) -> dict[int, bool | ClientError]:
    """For each of `users` (by id), as their memberships are now: True if they
    may edit the room's documents, False if muted (they read only), or the
    refusal (banned: FORBIDDEN, not a member of a private room: NOT_FOUND).
    One query; the room's one access rule (access_rule) decides."""
    ids = {user.pk for user in users}
    memberships = {m.user_id: m for m in Membership.objects.filter(room=room, user_id__in=ids)}
    answers: dict[int, bool | ClientError] = {}
    for user_id in ids:
        try:
            answers[user_id] = access_rule(room=room, membership=memberships.get(user_id)).can_post
        except (Forbidden, NotFound) as refused:
            answers[user_id] = refused
    return answers


@dataclass(frozen=True)
class Stored:
    """What the database holds of a document: (seq, update) pairs in order,
    the snapshot first (at its seq) when the log after `after` was compacted."""

    entries: list[tuple[int, bytes]]
    last_seq: int


def updates_after(*, document_id: int, after: int, until: int | None = None) -> Stored:
    """The document from just after seq `after` up to `until` (all by default).

    The log is read before the snapshot: a compaction in between then only
    makes the answer longer (the snapshot repeats updates, which CRDTs
    apply once), never shorter."""
    log = DocumentUpdate.objects.filter(document_id=document_id, seq__gt=after)
    if until is not None:
        log = log.filter(seq__lte=until)
    updates = [(seq, bytes(data)) for seq, data in log.order_by("seq").values_list("seq", "data")]
    head = one_or_none(
        Document.objects.filter(pk=document_id).values_list("snapshot", "snapshot_seq")
    )
    if head is None:
        raise NotFound("no such document")
    snapshot, snapshot_seq = bytes(head[0]), head[1]
    entries = updates
    if after < snapshot_seq and snapshot:
        entries = [(snapshot_seq, snapshot), *[u for u in updates if u[0] > snapshot_seq]]
    # The last seq read, not the document's last_seq: an update that committed
    # between the two reads is not in `entries`, and its doorbell must not be
    # taken for one already applied.
    return Stored(entries=entries, last_seq=entries[-1][0] if entries else after)


def crdt_failed(exc: BaseException) -> bool:
    """Whether `exc` is pycrdt failing on its input: an Exception (ValueError,
    RuntimeError), or pyo3's PanicException, a BaseException, from a panic
    of its Rust core."""
    return isinstance(exc, Exception) or type(exc).__name__ == "PanicException"


def apply_stored(ydoc: Doc, update: bytes, *, document_id: int, seq: int) -> bool:
    """Apply a stored update to `ydoc`; one that does not apply (stored before
    updates were checked) is logged and skipped, so the document stays
    readable. Whether it applied."""
    try:
        ydoc.apply_update(update)
    except BaseException as exc:
        if not crdt_failed(exc):
            raise
        logger.warning("document %s: stored update %s skipped: %s", document_id, seq, exc)
        return False
    return True


def document_ydoc(*, document_id: int) -> Doc:
    """The document, merged from its snapshot and log (pycrdt), skipping a
    stored update that does not apply (apply_stored)."""
    ydoc: Doc = Doc()
    for seq, update in updates_after(document_id=document_id, after=0).entries:
        apply_stored(ydoc, update, document_id=document_id, seq=seq)
    return ydoc


def document_text(*, document: Document) -> str:
    """The shared text `content` of the document ("" if pycrdt cannot read it)."""
    ydoc = document_ydoc(document_id=document.pk)
    try:
        return str(ydoc.get(TEXT_NAME, type=Text))
    except BaseException as exc:
        if not crdt_failed(exc):
            raise
        logger.warning("document %s: its text cannot be read: %r", document.pk, exc)
        return ""
