"""
Provides the shared documents' writes: opening a document (the room's access
rule, and membership of a public room, as `join` gives), appending updates
under the document's next gap-free seqs (a batch in one transaction, one
doorbell after commit), and compacting the log into a snapshot.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from django.db import connections, transaction
from django.db.models import Sum
from django.db.models.functions import Length
from django.utils import timezone
from pycrdt import Doc

from django_realtime.conf import realtime_settings
from django_realtime.errors import (
    BadRequest,
    ClientError,
    Forbidden,
    NotFound,
    RateLimited,
    TooLarge,
)
from django_realtime.types import User

from ..models import Document, DocumentUpdate, Room
from ..selectors import one_or_none, room_access_by_slug
from ..services import db_alias, room_join
from . import events, selectors
from .selectors import check_name


class UpdateTooLarge(TooLarge):
    """One update over DOCS_MAX_UPDATE_BYTES."""


class DocumentFull(TooLarge):
    """An update that would take the document over DOCS_MAX_DOCUMENT_BYTES."""


class Muted(Forbidden):
    """A muted member's update: they read only."""


class UpdateInvalid(BadRequest):
    """Not a Yjs update of this document: it does not decode, does not apply,
    or depends on something the document lacks."""


class OverQuota(RateLimited):
    """Past a user's document quota (DOCS_MAX_PER_ROOM, DOCS_USER_BYTES_RATE)."""


@dataclass(frozen=True)
class Opened:
    document_id: int
    room: Room
    can_edit: bool
    last_seq: int  # the document's, when opened


def document_open(*, user: User, slug: str, name: object) -> Opened:
    """Open (creating it if new) a document of a room the user may read.

    As `join` does, it makes the user a member of a public room. NOT_FOUND
    for a room or name the user cannot see, FORBIDDEN when banned; a muted
    member may open it to read (`can_edit` false). A room holds at most
    DOCS_MAX_PER_ROOM documents: past that, a new one is OverQuota and
    nothing is created."""
    name = check_name(name)
    access = room_access_by_slug(user=user, slug=slug)
    if access.membership is None:
        room_join(user=user, slug=slug)
    document = one_or_none(Document.objects.filter(room=access.room, name=name))
    if document is None:
        document = _document_create(room=access.room, name=name)
    return Opened(
        document_id=document.pk,
        room=access.room,
        can_edit=access.can_post,
        last_seq=document.last_seq,
    )


def _document_create(*, room: Room, name: str) -> Document:
    """A new document of the room, unless the room has DOCS_MAX_PER_ROOM
    (counted under the room's row lock, so two openers cannot both take the
    last place)."""
    cap = int(realtime_settings.DOCS_MAX_PER_ROOM)
    with transaction.atomic(using=db_alias()):
        Room.objects.select_for_update().filter(pk=room.pk).values_list("pk").first()
        document = one_or_none(Document.objects.filter(room=room, name=name))
        if document is not None:
            return document  # another opener created it meanwhile
        if cap and Document.objects.filter(room=room).count() >= cap:
            raise OverQuota(
                f"this room has {cap} documents, the most it may hold",
                retry_after_seconds=3600.0,
            )
        return Document.objects.create(room=room, name=name)


@dataclass(frozen=True)
class Appended:
    seq: int
    logged: int  # updates in the log past the snapshot, this one included


@dataclass(frozen=True)
class Pending:
    """One update waiting to be stored: whose, what, and from which connection."""

    user: User
    data: bytes
    origin: str = ""


# What updates_append says of each update: stored, or refused with this error.
Outcome = Appended | ClientError


def update_append(
    *, user: User, room: Room, document_id: int, data: bytes, origin: str = ""
) -> Appended:
    """Store one Yjs update (updates_append of one); raises what refused it."""
    (outcome,) = updates_append(
        room=room, document_id=document_id, updates=[Pending(user, data, origin)]
    )
    if isinstance(outcome, ClientError):
        raise outcome
    return outcome


def updates_append(*, room: Room, document_id: int, updates: Sequence[Pending]) -> list[Outcome]:
    """Store updates under the document's next seqs, in order, in ONE
    transaction, then (after commit) ring the document's doorbell once for
    all of them.

    Each update's author is held to the room's access rule as it is now (one
    query for the batch, chat.selectors.access_rule deciding): a member muted
    since opening is refused (Muted), one banned or removed from a private
    room too (FORBIDDEN, NOT_FOUND). TOO_LARGE past the update or the
    document limit. One outcome per update, in order."""
    outcomes: list[Outcome | None] = [None] * len(updates)
    may_edit = selectors.who_may_edit(room=room, users=[u.user for u in updates])
    for i, update in enumerate(updates):
        answer = may_edit[update.user.pk]
        if len(update.data) > realtime_settings.DOCS_MAX_UPDATE_BYTES:
            outcomes[i] = UpdateTooLarge("update too large")
        elif answer is False:
            outcomes[i] = Muted("you are muted here")
        elif answer is not True:
            outcomes[i] = answer
    taken = [i for i, outcome in enumerate(outcomes) if outcome is None]
    if not taken:
        return [o for o in outcomes if o is not None]
    alias = db_alias()
    with transaction.atomic(using=alias):
        stored = _take_seqs(document_id, [len(updates[i].data) for i in taken])
        rows, rung = [], []
        for i, got in zip(taken, stored, strict=True):
            if isinstance(got, ClientError):
                outcomes[i] = got
                continue
            seq, snapshot_seq = got
            outcomes[i] = Appended(seq=seq, logged=seq - snapshot_seq)
            rows.append(
                DocumentUpdate(
                    document_id=document_id, seq=seq, data=updates[i].data, user=updates[i].user
                )
            )
            rung.append((seq, updates[i].data, updates[i].origin))
        if rows:
            DocumentUpdate.objects.bulk_create(rows)
            transaction.on_commit(
                partial(events.broadcast_updates, document_id=document_id, updates=rung),
                using=alias,
            )
    return [o for o in outcomes if o is not None]


def _take_seqs(document_id: int, sizes: list[int]) -> list[tuple[int, int] | ClientError]:
    """The next len(sizes) seqs of the document, with its snapshot_seq, for
    updates of these sizes: one UPDATE for all of them, or, when together
    they would take it over DOCS_MAX_DOCUMENT_BYTES, one each (so the ones
    that fit are stored). Inside the caller's transaction.

    The UPDATE holds the document's row lock until commit, so seqs are
    gap-free and commit in order (as chat messages' do)."""
    table = Document._meta.db_table
    limit = realtime_settings.DOCS_MAX_DOCUMENT_BYTES

    def take(count: int, size: int) -> tuple[int, int] | None:
        with connections[db_alias()].cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET last_seq = last_seq + %s,"
                " stored_bytes = stored_bytes + %s, updated_at = %s"
                " WHERE id = %s AND stored_bytes + %s <= %s"
                " RETURNING last_seq, snapshot_seq",
                [count, size, timezone.now(), document_id, size, limit],
            )
            row = cursor.fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    got = take(len(sizes), sum(sizes))
    if got is not None:
        last, snapshot_seq = got
        first = last - len(sizes) + 1
        return [(first + k, snapshot_seq) for k in range(len(sizes))]
    if not Document.objects.filter(pk=document_id).exists():
        return [NotFound("no such document") for _ in sizes]
    if len(sizes) == 1:
        return [DocumentFull("document too large")]
    taken: list[tuple[int, int] | ClientError] = []
    for size in sizes:
        one = take(1, size)
        taken.append(DocumentFull("document too large") if one is None else one)
    return taken


@dataclass(frozen=True)
class Compaction:
    up_to: int  # the snapshot's seq now
    bytes_before: int
    bytes_after: int


def document_compact(*, document_id: int) -> Compaction | None:
    """Merge the snapshot and every logged update into a new snapshot, and
    drop those updates from the log. None if there was nothing to do or
    another compaction got there first.

    The merge runs without a lock; only the swap takes the document's row
    lock, briefly. An update stored meanwhile has a higher seq than any
    merged, so it stays in the log: nothing concurrent is lost."""
    head = one_or_none(
        Document.objects.filter(pk=document_id).values_list("snapshot", "snapshot_seq")
    )
    if head is None:
        return None
    snapshot, snapshot_seq = bytes(head[0]), head[1]
    updates = list(
        DocumentUpdate.objects.filter(document_id=document_id, seq__gt=snapshot_seq)
        .order_by("seq")
        .values_list("seq", "data")
    )
    if not updates:
        return None
    ydoc: Doc = Doc()
    if snapshot:
        selectors.apply_stored(ydoc, snapshot, document_id=document_id, seq=snapshot_seq)
    for seq, data in updates:  # one that does not apply is left out of the snapshot
        selectors.apply_stored(ydoc, bytes(data), document_id=document_id, seq=seq)
    merged = ydoc.get_update()
    up_to = updates[-1][0]
    with transaction.atomic(using=db_alias()):
        locked = one_or_none(
            Document.objects.select_for_update()
            .filter(pk=document_id)
            .values_list("snapshot_seq", "stored_bytes")
        )
        if locked is None or locked[0] != snapshot_seq:
            return None  # compacted meanwhile by someone else
        DocumentUpdate.objects.filter(document_id=document_id, seq__lte=up_to).delete()
        rest = DocumentUpdate.objects.filter(document_id=document_id).aggregate(
            total=Sum(Length("data"))
        )["total"]
        after = len(merged) + int(rest or 0)
        Document.objects.filter(pk=document_id).update(
            snapshot=merged, snapshot_seq=up_to, stored_bytes=after
        )
    return Compaction(up_to=up_to, bytes_before=int(locked[1]), bytes_after=after)
