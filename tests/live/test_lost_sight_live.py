"""A task that changes hands on the demo's live board (project.live: tasks
seen by their owner and by staff) over real sockets, two server processes on
one Redis: its old owner's WebSocket gets `deleted` with the task's id only,
at the save's offset; its new owner's JSON SSE stream gets the save; a third
user gets nothing (issue 30, docs/topics.md)."""

import asyncio
import json

import httpx
import pytest
from django.contrib.auth.models import Permission

from .conftest import Ws, manage_shell

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]
TOPIC = "live:tasks"


async def test_the_old_owner_is_told_the_new_owner_gets_it_a_stranger_nothing(
    server, server_b, redis_url, make_user, token_for
):
    def watcher(name):
        user = make_user(name)
        user.user_permissions.add(Permission.objects.get(codename="view_task"))
        return user, token_for(user)

    (alice, alice_token), (bob, bob_token), (_, carol_token) = [
        await asyncio.to_thread(watcher, name) for name in ("alice", "bob", "carol")
    ]
    old = await Ws.connect(server.ws, token=alice_token)
    at = (await old.request({"type": "subscribe", "topic": TOPIC}, "subscribed"))["offset"]
    stranger = await Ws.connect(server_b.ws, token=carol_token)
    await stranger.request({"type": "subscribe", "topic": TOPIC}, "subscribed")
    headers = {"Authorization": f"Token {bob_token}"}
    async with httpx.AsyncClient(base_url=server_b.http, headers=headers, timeout=20) as sse:
        async with sse.stream("GET", f"/events/topics/{TOPIC}/") as stream:
            assert stream.status_code == 200
            lines = stream.aiter_lines()
            events: list[str] = []
            while not any(line.startswith("event: subscribed") for line in events):
                events.append(await asyncio.wait_for(anext(lines), 10))
            out = await asyncio.to_thread(
                manage_shell,
                "from project.models import Task\n"
                f"task = Task.objects.create(title='plan', owner_id={alice.pk})\n"
                f"task.owner_id = {bob.pk}\n"
                "task.save()\n"
                "print(task.pk)",
                redis_url=redis_url,
            )
            pk = int(out.strip().splitlines()[-1])
            events = []
            while not any(line.startswith('data: {"type":"publication"') for line in events):
                events.append(await asyncio.wait_for(anext(lines), 15))
    created = await old.recv_type("publication", timeout=15)
    assert (created["offset"], created["data"]["event"]) == (at + 1, "created")
    gone = await old.recv_type("publication", timeout=15)
    assert gone == {
        "type": "publication",
        "topic": TOPIC,
        "offset": at + 2,
        "key": str(pk),
        "data": {"event": "deleted", "task": {"id": pk}},
    }
    # bob's first event is the save that gave him the task, at its offset.
    ids = [line[4:] for line in events if line.startswith("id: ")]
    published = 'data: {"type":"publication"'
    (data,) = [json.loads(line[6:]) for line in events if line.startswith(published)]
    assert ids[-1].endswith(f":{at + 2}") and data["offset"] == at + 2
    assert (data["data"]["event"], data["data"]["task"]["title"]) == ("updated", "plan")
    assert await stranger.quiet(0.5) == []
    assert await old.quiet(0.3) == []
    await old.close()
    await stranger.close()
