"""The room fan-out on its own (chat/fanout.py), with stand-in members."""

import json

import pytest

from chat import events
from chat.fanout import RoomFanout
from django_realtime import metrics
from presence import events as presence_events


class Member:
    def __init__(self, fail: bool = False, at_once: bool = False):
        self.fail, self.at_once = fail, at_once
        self.messages: list[tuple[int, int, str]] = []
        self.events: list[dict] = []

    def fanout_message_now(self, room_id, seq, text):
        """at_once: the socket took it (no coroutine); else the coroutine's way."""
        if not self.at_once:
            return None
        if self.fail:
            raise ConnectionError("the socket just went")
        self.messages.append((room_id, seq, text))
        return True

    async def fanout_message(self, room_id, seq, payload, text):
        if self.fail:
            raise ConnectionError("the socket just went")
        self.messages.append((room_id, seq, text))
        return True

    async def fanout_event(self, event):
        if self.fail:
            raise ConnectionError("the socket just went")
        self.events.append(event)


def message_event(room_id: int, seq: int) -> dict:
    payload = {"type": "message", "room": "r", "seq": seq, "content": "é <b>"}
    return {"type": events.MESSAGE, "room_id": room_id, "payload": payload}


@pytest.fixture
def hub():
    return RoomFanout()


@pytest.mark.parametrize("at_once", [False, True])
async def test_a_message_is_serialised_once_and_reaches_every_member(hub, at_once):
    members = [Member(at_once=at_once), Member(fail=True, at_once=at_once), Member()]
    hub.members[7] = set(members)
    before = metrics.FRAMES_OUT.value
    await hub.dispatch(message_event(7, 1))
    assert metrics.FRAMES_OUT.value - before == 2  # frames sent, not members
    texts = {text for m in members for (_, _, text) in m.messages}
    assert len(texts) == 1 and json.loads(texts.pop())["content"] == "é <b>"
    assert [m.messages[0][:2] for m in members if not m.fail] == [(7, 1), (7, 1)]


async def test_other_events_reach_every_member_despite_one_failing(hub):
    members = [Member(fail=True), Member()]
    hub.members[7] = set(members)
    event = {"type": presence_events.TYPING, "room_id": 7, "payload": {"type": "typing"}}
    await hub.dispatch(event)
    assert [m.events for m in members if not m.fail] == [[event]]


async def test_events_of_rooms_without_local_members_are_ignored(hub):
    member = Member()
    hub.members[7] = {member}
    await hub.dispatch(message_event(8, 1))
    assert member.messages == []
