"""
Provides presence on the channel layer: one `presence` diff per transition,
sent to the room's group, and the `is_typing: false` of a typist whose own
process could not send it.
"""

from chat.events import broadcast_typing, room_group, send_to_group

from .store import Change, TypingLapse

DIFF = "presence.diff"


def diff_payload(room_slug: str, changes: list[Change]) -> dict:
    joins = [
        {"user": {"id": c.user_id, "username": c.username}, "status": c.status}
        for c in changes
        if c.status is not None
    ]
    leaves = [
        {"user": {"id": c.user_id, "username": c.username}} for c in changes if c.status is None
    ]
    return {"type": "presence", "room": room_slug, "joins": joins, "leaves": leaves}


async def broadcast_changes(
    *, room_id: int, room_slug: str, changes: list[Change], skip_channel: str | None = None
) -> None:
    """The diff to the room; `skip_channel`, the connection whose join it
    announces, drops it (its `joined` list has it already)."""
    if not changes:
        return
    event = {"type": DIFF, "room_id": room_id, "payload": diff_payload(room_slug, changes)}
    if skip_channel is not None:
        event["skip_channel"] = skip_channel
    await send_to_group(room_group(room_id), event)


async def broadcast_typing_lapse(lapse: TypingLapse) -> None:
    await broadcast_typing(
        room_id=lapse.room_id,
        room_slug=lapse.room_slug,
        user={"id": lapse.user_id, "username": lapse.username},
        is_typing=False,
    )
