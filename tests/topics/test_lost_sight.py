"""What broadcast_model owes a JSON subscriber who loses sight of an object
(issue 30, docs/topics.md): whoever saw it before a save and may not after
gets `{"event": "deleted", "<model>": {key fields}}` at the publication's
offset, over WebSocket (live, batched and replayed) and over the JSON SSE
stream; whoever never saw it gets nothing. In one process (the in-memory
layer and history)."""

import json

import pytest
from asgiref.sync import sync_to_async

from django_realtime.topics import broadcast_model, history, visibility
from django_realtime.topics.broadcast import _broadcasts
from project.models import Task

from .test_sse_hub import open_stream, read_until, sent
from .test_topics import connect, next_frames, subscribe

pytestmark = pytest.mark.django_db(transaction=True)
TOPIC = "live:mine"


@pytest.fixture(autouse=True)
def _mine(realtime):
    """Tasks on one shared topic, each seen by its owner only, no template."""
    realtime.TOPICS = {"live": {}}
    history._memory.topics.clear()
    declared = _broadcasts["project.task"]
    broadcast_model(
        Task,
        topic=TOPIC,
        fields=["id", "title", "done"],
        visible=lambda user, task: task.owner_id == user.pk,
        check_fields=["owner"],
    )
    yield
    broadcast_model(
        Task,
        topic=declared.topic,
        fields=declared.fields,
        visible=declared.check,
        check_fields=declared.check_fields,
        template=declared.template,
        target=declared.target,
        container=declared.container,
    )
    history._memory.topics.clear()


def give(task, owner):
    task.owner = owner
    task.save()


async def test_websocket_subscribers_who_lose_sight_get_a_deletion(
    alice, bob, make_user, monkeypatch
):
    carol = await sync_to_async(make_user)("carol")
    checks = []
    original = visibility.lost

    async def counted(publication, users, seeing):
        checks.append(publication.offset)
        return await original(publication, users, seeing)

    monkeypatch.setattr(visibility, "lost", counted)
    a, a_batch, b, c = [await connect(u) for u in (alice, alice, bob, carol)]
    epoch = (await subscribe(a, TOPIC))["epoch"]
    for ws in (b, c):
        await subscribe(ws, TOPIC)
    await subscribe(a_batch, TOPIC, batch=True)
    task = await sync_to_async(Task.objects.create)(title="secret plan", owner=alice)
    (created,) = await next_frames(a, 1)
    assert (created["offset"], created["data"]["event"]) == (1, "created")
    assert (await next_frames(a_batch, 1))[0]["publications"][0]["offset"] == 1

    await sync_to_async(give)(task, bob)
    (gone,) = await next_frames(a, 1)
    assert gone == {
        "type": "publication",
        "topic": TOPIC,
        "offset": 2,
        "key": str(task.pk),
        "data": {"event": "deleted", "task": {"id": task.pk}},
    }
    (batch,) = await next_frames(a_batch, 1)
    assert batch["publications"] == [{k: gone[k] for k in ("offset", "key", "data")}]
    (taken,) = await next_frames(b, 1)
    assert taken["offset"] == 2
    assert taken["data"] == {
        "event": "updated",
        "task": {"id": task.pk, "title": "secret plan", "done": False},
    }
    # One before-check for the round, for both of alice's sockets (and carol).
    assert checks == [2]
    # A replay tells alice the same; carol never saw it: nothing, live or replayed.
    a2, c2 = await connect(alice), await connect(carol)
    await subscribe(a2, TOPIC, since=0, epoch=epoch)
    assert [f["data"]["event"] for f in await next_frames(a2, 2)] == ["created", "deleted"]
    await subscribe(c2, TOPIC, since=0, epoch=epoch)
    for ws in (a, a_batch, a2, b, c, c2):
        assert await ws.receive_nothing(timeout=0.2)
        await ws.disconnect()


async def test_json_sse_subscribers_who_lose_sight_get_a_deletion(alice, bob, make_user):
    carol = await sync_to_async(make_user)("carol")
    pages = {user.username: open_stream(user, "json", topic=TOPIC) for user in (alice, bob, carol)}
    for body in pages.values():
        await anext(body)
    task = await sync_to_async(Task.objects.create)(title="secret plan", owner=alice)
    ((offset, data),) = await read_until(pages["alice"], 1)
    assert offset == 1 and json.loads(data)["data"]["event"] == "created"
    await sync_to_async(give)(task, bob)
    ((offset, data),) = await read_until(pages["alice"], 2)
    assert offset == 2
    assert json.loads(data)["data"] == {"event": "deleted", "task": {"id": task.pk}}
    ((offset, data),) = await read_until(pages["bob"], 2)
    assert offset == 2 and json.loads(data)["data"]["task"]["title"] == "secret plan"
    # carol saw neither: her first event is her own task's, at 3.
    await sync_to_async(Task.objects.create)(title="hers", owner=carol)
    ((offset, data),) = await read_until(pages["carol"], 3)
    assert offset == 3 and json.loads(data)["data"]["task"]["title"] == "hers"
    # A stream resumed from the history tells alice the same; carol gets nothing.
    epoch = history._memory.topics[TOPIC].epoch
    resumed = open_stream(alice, "json", topic=TOPIC, position=(epoch, 0))
    replayed = sent(await anext(resumed))
    assert [(o, json.loads(d)["data"]["event"]) for o, d in replayed] == [
        (1, "created"),
        (2, "deleted"),
    ]  # not 3: carol's
    carols = open_stream(carol, "json", topic=TOPIC, position=(epoch, 0))
    assert [offset for offset, _ in sent(await anext(carols))] == [3]
    for body in (*pages.values(), resumed, carols):
        await body.aclose()


def test_only_saves_with_a_check_store_the_before_and_only_the_key_goes_out(alice, bob):
    task = Task.objects.create(title="secret plan", owner=alice)
    give(task, bob)
    created, updated = history._memory.topics[TOPIC].publications
    assert "before" not in json.loads(created.audience)
    audience = json.loads(updated.audience)
    assert audience["before"]["owner"] == alice.pk
    assert audience["gone"] == {"event": "deleted", "task": {"id": task.pk}}
    # Without a check: no audience at all (nothing more is stored or checked).
    broadcast_model(Task, topic=TOPIC, fields=["id", "title"])
    give(task, alice)
    assert history._memory.topics[TOPIC].publications[-1].audience is None
