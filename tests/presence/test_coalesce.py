"""Presence diffs coalesce under a burst: the first goes at once, the rest of
the window's changes go as one merged diff (the last change of each user wins)."""

import asyncio

from channels.layers import get_channel_layer

from django_realtime.bus import room_group
from presence.events import broadcast_changes
from presence.store import Change


async def test_a_burst_is_the_first_diff_then_one_merged_diff(realtime):
    realtime.PRESENCE_DIFF_COALESCE_SECONDS = 0.3
    room_id = 9101
    layer = get_channel_layer()
    inbox = await layer.new_channel()
    await layer.group_add(room_group(room_id), inbox)

    async def diff(user_id, name, status, skip=None):
        change = Change(room_id=room_id, user_id=user_id, username=name, status=status)
        await broadcast_changes(room_id=room_id, room_slug="r", changes=[change], skip_channel=skip)

    await diff(1, "ann", "online")
    await diff(2, "bea", "online", skip="bea-tab")
    await diff(2, "bea", None)  # bea left again within the window
    await diff(3, "cid", "away")

    first = await asyncio.wait_for(layer.receive(inbox), 2)
    assert [j["user"]["username"] for j in first["payload"]["joins"]] == ["ann"]
    merged = await asyncio.wait_for(layer.receive(inbox), 2)
    assert [(j["user"]["username"], j["status"]) for j in merged["payload"]["joins"]] == [
        ("cid", "away")
    ]
    assert [lv["user"]["username"] for lv in merged["payload"]["leaves"]] == ["bea"]
    assert merged["joiners"] == {"bea-tab": 2}
    await layer.group_discard(room_group(room_id), inbox)


async def test_a_quiet_room_gets_its_diff_at_once(realtime):
    realtime.PRESENCE_DIFF_COALESCE_SECONDS = 5
    room_id = 9102
    layer = get_channel_layer()
    inbox = await layer.new_channel()
    await layer.group_add(room_group(room_id), inbox)
    change = Change(room_id=room_id, user_id=1, username="ann", status="online")
    await broadcast_changes(room_id=room_id, room_slug="r", changes=[change])
    assert (await asyncio.wait_for(layer.receive(inbox), 1))["payload"]["joins"]
    await layer.group_discard(room_group(room_id), inbox)
