"""
Provides presence diffs on the channel layer: one `presence` frame per
transition, sent to the room's group.
"""

from chat.events import room_group, send_to_group

from .store import Change

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


async def broadcast_changes(*, room_id: int, room_slug: str, changes: list[Change]) -> None:
    if not changes:
        return
    await send_to_group(
        room_group(room_id),
        {"type": DIFF, "room_id": room_id, "payload": diff_payload(room_slug, changes)},
    )
