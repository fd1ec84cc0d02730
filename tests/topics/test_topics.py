"""Live-data topics in one process (contract §8, docs/topics.md): the
consumer through WebsocketCommunicator, the in-memory history and layer,
publish() from sync and async code, the HTTP publish API and model
broadcasting. Across processes and on Redis: tests/live/test_topics_live.py."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import transaction

from chat import services
from chat.consumers import RealtimeConsumer
from chat.models import Room
from django_realtime.errors import BadRequest, NotFound, TooLarge
from django_realtime.topics import apublish, history, publish, publish_instances
from django_realtime.topics.history import Publication, State, replay

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _fresh_history(realtime):
    realtime.TOPICS = {"public": {}, "prices": {"max_rate": "2/1s"}, "tiny": {"history_size": 2}}
    history._memory.topics.clear()
    yield
    history._memory.topics.clear()


async def connect(user) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(RealtimeConsumer.as_asgi(), "/ws/")
    communicator.scope["user"] = user
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def subscribe(ws, topic, **fields) -> dict:
    await ws.send_json_to({"type": "subscribe", "topic": topic, **fields})
    return await ws.receive_json_from(timeout=5)


async def next_frames(ws, n) -> list[dict]:
    return [await ws.receive_json_from(timeout=5) for _ in range(n)]


# --- the replay rule ---------------------------------------------------------------------
def pub(offset, key=None, epoch="e1"):
    return Publication("public:x", epoch, offset, {"n": offset}, key)


def test_a_resume_in_the_same_epoch_with_everything_held_is_recovered():
    state = State("e1", 5, [pub(3), pub(4), pub(5)])
    result = replay(state, since=2, epoch="e1")
    assert (result.recovered, [p.offset for p in result.publications]) == (True, [3, 4, 5])


def test_a_resume_past_what_the_history_holds_gets_the_latest_of_each_key():
    state = State("e1", 6, [pub(3, "a"), pub(4, "b"), pub(5, "a"), pub(6)])
    result = replay(state, since=1, epoch="e1")
    assert result.recovered is False
    assert [(p.offset, p.key) for p in result.publications] == [(4, "b"), (5, "a"), (6, None)]


def test_a_resume_from_another_epoch_is_not_recovered():
    state = State("e2", 2, [pub(1, "a", "e2"), pub(2, "a", "e2")])
    result = replay(state, since=2, epoch="e1")
    assert (result.recovered, [p.offset for p in result.publications]) == (False, [2])


def test_a_subscribe_without_since_replays_nothing():
    result = replay(State("e1", 3, [pub(3)]), since=None, epoch=None)
    assert (result.offset, result.recovered, result.publications) == (3, False, [])


# --- the WebSocket -------------------------------------------------------------------------
async def test_a_subscriber_gets_publications_in_offset_order(alice):
    ws = await connect(alice)
    subscribed = await subscribe(ws, "public:scores", ref=7)
    assert subscribed == {
        "type": "subscribed",
        "topic": "public:scores",
        "offset": 0,
        "epoch": subscribed["epoch"],
        "recovered": False,
        "ref": 7,
    }
    for n in range(1, 4):
        assert await apublish("public:scores", {"n": n}, key="k" if n == 2 else None) == n
    got = await next_frames(ws, 3)
    frame = {"type": "publication", "topic": "public:scores"}
    assert got == [
        {**frame, "offset": 1, "data": {"n": 1}},
        {**frame, "offset": 2, "key": "k", "data": {"n": 2}},
        {**frame, "offset": 3, "data": {"n": 3}},
    ]
    await ws.disconnect()


async def test_a_resume_replays_exactly_the_missed_publications(alice):
    ws = await connect(alice)
    first = await subscribe(ws, "public:scores")
    await apublish("public:scores", {"n": 1})
    await next_frames(ws, 1)
    await ws.disconnect()
    for n in (2, 3):
        await apublish("public:scores", {"n": n})
    ws = await connect(alice)
    again = await subscribe(ws, "public:scores", since=1, epoch=first["epoch"])
    assert (again["recovered"], again["offset"], again["epoch"]) == (True, 3, first["epoch"])
    assert [f["data"]["n"] for f in await next_frames(ws, 2)] == [2, 3]
    await apublish("public:scores", {"n": 4})
    assert (await ws.receive_json_from(timeout=5))["offset"] == 4
    await ws.disconnect()


async def test_a_resume_the_history_cannot_cover_gets_the_latest_values(alice):
    for n in range(1, 6):
        await apublish("tiny:t", {"n": n}, key="a" if n % 2 else "b")
    ws = await connect(alice)
    subscribed = await subscribe(ws, "tiny:t", since=0)
    assert (subscribed["recovered"], subscribed["offset"]) == (False, 5)
    got = await next_frames(ws, 2)  # history_size 2 holds offsets 4 (b) and 5 (a)
    assert [(f["offset"], f["key"]) for f in got] == [(4, "b"), (5, "a")]
    await ws.disconnect()


async def test_refusals_are_error_frames_and_the_connection_carries_on(alice):
    ws = await connect(alice)
    cases = [
        ({"topic": "nope:x"}, "NOT_FOUND"),
        ({"topic": "no-colon"}, "BAD_REQUEST"),
        ({"topic": "public:" + "x" * 100}, "BAD_REQUEST"),
        ({"topic": "public:x", "since": -1}, "BAD_REQUEST"),
        ({"topic": "public:x", "since": True}, "BAD_REQUEST"),
        ({"topic": "public:x", "epoch": 5}, "BAD_REQUEST"),
        ({"topic": 3}, "BAD_REQUEST"),
    ]
    for fields, code in cases:
        reply = await subscribe(ws, ref="r", **fields)
        assert (reply["type"], reply["code"], reply["ref"]) == ("error", code, "r"), fields
    assert (await subscribe(ws, "public:x"))["type"] == "subscribed"
    await ws.disconnect()


async def test_a_namespace_the_user_may_not_subscribe_to_looks_unknown(alice, realtime):
    realtime.TOPICS = {"staff": {"subscribe": lambda user, topic: user.is_staff}}
    ws = await connect(alice)
    refused = await subscribe(ws, "staff:x")
    unknown = await subscribe(ws, "other:x")
    assert refused["code"] == unknown["code"] == "NOT_FOUND"
    assert refused["message"].replace("staff", "") == unknown["message"].replace("other", "")
    await ws.disconnect()


async def test_unsubscribe_stops_publications(alice):
    ws = await connect(alice)
    await subscribe(ws, "public:a")
    await subscribe(ws, "public:b")
    await ws.send_json_to({"type": "unsubscribe", "topic": "public:a"})
    assert await ws.receive_json_from(timeout=5) == {"type": "unsubscribed", "topic": "public:a"}
    await apublish("public:a", {"x": 1})
    await apublish("public:b", {"x": 2})
    assert (await ws.receive_json_from(timeout=5))["topic"] == "public:b"
    assert await ws.receive_nothing(timeout=0.3)
    await ws.disconnect()


async def test_a_connection_has_at_most_the_configured_number_of_topics(alice, realtime):
    realtime.TOPICS_MAX_SUBSCRIPTIONS = 2
    ws = await connect(alice)
    assert (await subscribe(ws, "public:a"))["type"] == "subscribed"
    assert (await subscribe(ws, "public:b"))["type"] == "subscribed"
    refused = await subscribe(ws, "public:c")
    assert refused["code"] == "BAD_REQUEST" and "at most 2" in refused["message"]
    assert (await subscribe(ws, "public:a"))["type"] == "subscribed"  # again: no new slot
    await ws.disconnect()


async def test_subscribes_have_their_own_rate_apart_from_joins(alice, realtime):
    realtime.TOPICS_SUBSCRIBE_RATE = "2/60s"
    realtime.CHAT_JOIN_RATE = "off"
    ws = await connect(alice)
    assert (await subscribe(ws, "public:a"))["type"] == "subscribed"
    assert (await subscribe(ws, "public:b"))["type"] == "subscribed"
    refused = await subscribe(ws, "public:c")
    assert refused["code"] == "RATE_LIMITED" and refused["retry_after"] > 0
    await ws.disconnect()


async def test_a_new_epoch_while_subscribed_sends_subscribed_again(alice):
    ws = await connect(alice)
    first = await subscribe(ws, "public:s")
    await apublish("public:s", {"v": 1}, key="k")
    await next_frames(ws, 1)
    history._memory.topics.clear()  # the history is lost (Redis restarted empty)
    await apublish("public:s", {"v": 2}, key="k")
    again = await ws.receive_json_from(timeout=5)
    assert again["type"] == "subscribed" and again["epoch"] != first["epoch"]
    assert again["recovered"] is False
    assert (await ws.receive_json_from(timeout=5))["data"] == {"v": 2}
    await ws.disconnect()


# --- conflation -------------------------------------------------------------------------------
@pytest.mark.parametrize("batch", [False, True], ids=["frame each", "batches"])
async def test_a_subscriber_that_is_behind_gets_the_latest_value_of_each_key(alice, batch):
    """Held while its socket is full, conflated by key meanwhile; then the
    latest of each key in offset order (to a batching subscription, in one
    `publications` frame at once)."""
    ws = await connect(alice)
    await subscribe(ws, "public:p", **({"batch": True} if batch else {}))
    stalled = {"bytes": 10**6}
    _subscriptions().pending_output = lambda: stalled["bytes"]
    for n in range(1, 31):
        await apublish("public:p", {"n": n}, key=f"k{n % 3}")
    await apublish("public:p", {"n": 31})  # keyless: never conflated
    await asyncio.sleep(0.1)
    assert await ws.receive_nothing(timeout=0.1)  # held while the socket is full
    stalled["bytes"] = 0
    latest = [(28, "k1"), (29, "k2"), (30, "k0"), (31, None)]
    if batch:
        frame = await ws.receive_json_from(timeout=5)
        assert [(offset, key) for offset, key, _ in batch_of(frame)] == latest
    else:
        got = await next_frames(ws, 4)
        assert [(f["offset"], f.get("key")) for f in got] == latest
    assert await ws.receive_nothing(timeout=0.2)
    await ws.disconnect()


async def test_a_burst_below_the_process_backlog_reaches_every_subscriber_in_full(alice, realtime):
    """Doorbells that arrive together (the hub busy meanwhile) are not
    conflated while fewer than TOPICS_PROCESS_BACKLOG wait: a subscriber
    that keeps up gets every publication, the same key's included."""
    from django_realtime.topics import names
    from django_realtime.topics.hub import hub

    realtime.TOPICS_PROCESS_LAG_SECONDS = 60  # however slow this machine is
    ws = await connect(alice)
    await subscribe(ws, "public:p")
    namespace = names.parse("public:p")
    for n in range(1, 11):
        published = await history.history().apublish(
            "public:p",
            {"n": n},
            namespace=namespace,
            key="price",
            idempotency_key=None,
            audience=None,
        )
        await hub().receive(published.publication)
    got = await next_frames(ws, 10)
    assert [f["data"]["n"] for f in got] == list(range(1, 11))
    await ws.disconnect()


@pytest.mark.parametrize("behind", ["by count", "by time"])
async def test_what_the_hub_conflated_is_not_fetched_again_as_a_gap(alice, realtime, behind):
    """The process itself falls behind (publications arrive faster than its
    hub hands them out): each subscriber gets the latest of each key, in
    offset order, once; the offsets the hub skipped are not a gap to fill
    from the history (that would send everything it just conflated, and
    out of order)."""
    from django_realtime.topics import names
    from django_realtime.topics.hub import hub

    if behind == "by count":
        realtime.TOPICS_PROCESS_BACKLOG = 0  # behind at once
    else:
        realtime.TOPICS_PROCESS_LAG_SECONDS = 0  # behind once one has waited at all
        realtime.TOPICS_ROUND_SECONDS = 0  # (waiting for the next round is not being behind)
        realtime.TOPICS_HAND_OUT_SHARE = 1  # (nor is waiting for a slow round's pause)
    ws = await connect(alice)
    await subscribe(ws, "public:p")
    await apublish("public:p", {"n": 1}, key="k1")
    assert (await ws.receive_json_from(timeout=5))["offset"] == 1
    namespace = names.parse("public:p")
    store = history.history()
    reads = []
    state = store.state

    async def counted_state(*args, **kwargs):
        reads.append(args)
        return await state(*args, **kwargs)

    store.state = counted_state  # type: ignore[method-assign]
    for n in range(2, 32):  # the hub receives 30 doorbells before it runs again
        published = await history.history().apublish(
            "public:p",
            {"n": n},
            namespace=namespace,
            key=f"k{n % 3}",
            idempotency_key=None,
            audience=None,
        )
        await hub().receive(published.publication)
    got = await next_frames(ws, 3)
    assert [(f["offset"], f["key"]) for f in got] == [(29, "k2"), (30, "k0"), (31, "k1")]
    assert await ws.receive_nothing(timeout=0.3)
    assert reads == []  # nothing fetched again: under load that read was per subscriber
    del store.state
    await ws.disconnect()


async def test_a_queue_of_keyless_publications_past_its_cap_closes_the_connection(alice, realtime):
    realtime.TOPICS_MAX_QUEUE = 5
    ws = await connect(alice)
    await subscribe(ws, "public:p")
    _subscriptions().pending_output = lambda: 10**6
    for n in range(7):
        await apublish("public:p", {"n": n})
    closed = await ws.receive_output(timeout=5)
    assert closed == {
        "type": "websocket.close",
        "code": 4413,
        "reason": "policy: output over limit",
    }


async def test_a_namespace_max_rate_conflates_by_key(alice):
    ws = await connect(alice)
    await subscribe(ws, "prices:eur")
    for n in range(1, 11):
        await apublish("prices:eur", {"n": n}, key="eur")
    got = await next_frames(ws, 3)  # 2 at once (the bucket), then the latest
    assert [f["data"]["n"] for f in got] == [1, 2, 10]
    assert await ws.receive_nothing(timeout=0.7)
    await ws.disconnect()


def _subscriptions():
    from django_realtime.topics.hub import hub

    held = next(iter(hub().topics.values()))
    return next(iter(held.members))


# --- batches ("batch": true) -------------------------------------------------------------------
def batch_of(frame: dict) -> list[tuple[int, str | None, int]]:
    assert frame["type"] == "publications", frame
    return [(p["offset"], p.get("key"), p["data"]["n"]) for p in frame["publications"]]


async def publish_together(topic: str, count: int, key=None) -> None:
    """`count` publications the hub receives before it runs again: one round."""
    from django_realtime.topics import names
    from django_realtime.topics.hub import hub

    for n in range(1, count + 1):
        published = await history.history().apublish(
            topic,
            {"n": n},
            namespace=names.parse(topic),
            key=key(n) if key else None,
            idempotency_key=None,
            audience=None,
        )
        await hub().receive(published.publication)


async def test_a_batching_subscriber_gets_a_round_in_one_publications_frame(alice, bob):
    """The same round: one `publications` frame, in offset order, to the
    subscriber that asked for batches; a frame per publication to the other."""
    batching, single = await connect(alice), await connect(bob)
    assert (await subscribe(batching, "public:b", batch=True))["type"] == "subscribed"
    await subscribe(single, "public:b")
    await publish_together("public:b", 5, key=lambda n: f"k{n % 2}")
    frame = await batching.receive_json_from(timeout=5)
    assert (frame["type"], frame["topic"]) == ("publications", "public:b")
    assert frame["publications"][1] == {"offset": 2, "key": "k0", "data": {"n": 2}}
    assert batch_of(frame) == [(1, "k1", 1), (2, "k0", 2), (3, "k1", 3), (4, "k0", 4), (5, "k1", 5)]
    assert await batching.receive_nothing(timeout=0.2)
    got = await next_frames(single, 5)
    assert [(f["type"], f["offset"]) for f in got] == [("publication", n) for n in range(1, 6)]
    # Later rounds follow on, once each.
    assert await apublish("public:b", {"n": 6}) == 6
    assert batch_of(await batching.receive_json_from(timeout=5)) == [(6, None, 6)]
    for ws in (batching, single):
        await ws.disconnect()


async def test_a_batching_subscribers_replay_comes_in_publications_frames(alice):
    for n in range(1, 4):
        await apublish("public:b", {"n": n})
    ws = await connect(alice)
    subscribed = await subscribe(ws, "public:b", batch=True, since=1, epoch=None)
    assert (subscribed["recovered"], subscribed["offset"]) == (False, 3)
    again = await connect(alice)
    await subscribe(again, "public:b", batch=True, since=1, epoch=subscribed["epoch"])
    assert batch_of(await again.receive_json_from(timeout=5)) == [(2, None, 2), (3, None, 3)]
    for n in (4, 5):
        await apublish("public:b", {"n": n})
    got = [await again.receive_json_from(timeout=5)]
    if len(got[0]["publications"]) == 1:  # two rounds, or one
        got.append(await again.receive_json_from(timeout=5))
    assert [entry for frame in got for entry in batch_of(frame)] == [(4, None, 4), (5, None, 5)]
    for w in (ws, again):
        await w.disconnect()


async def test_batch_must_be_a_boolean(alice):
    ws = await connect(alice)
    refused = await subscribe(ws, "public:b", batch="yes", ref=3)
    assert refused == {
        "type": "error",
        "code": "BAD_REQUEST",
        "message": "'batch' must be true or false",
        "ref": 3,
    }
    assert (await subscribe(ws, "public:b", batch=False))["type"] == "subscribed"
    await ws.disconnect()


async def test_a_round_is_checked_per_subscriber_in_batches_too(alice, bob, monkeypatch):
    """A publication with an audience (a model broadcast's per-object check)
    is left out of what a subscriber who may not see it gets; a batching
    subscription gets `publications` frames only."""
    from django_realtime.topics import names, visibility
    from django_realtime.topics.hub import hub

    a, b = await connect(alice), await connect(bob)
    await subscribe(a, "public:b", batch=True)
    await subscribe(b, "public:b", batch=True)
    published = [
        await history.history().apublish(
            "public:b",
            {"n": n},
            namespace=names.parse("public:b"),
            key=None,
            idempotency_key=None,
            audience=audience,
        )
        for n, audience in ((1, None), (2, "alice only"), (3, None))
    ]
    original = visibility.allowed

    async def alice_only(publication, users):
        if publication.audience == "alice only":
            return {user.pk for user in users if user.pk == alice.pk}
        return await original(publication, users)

    monkeypatch.setattr(visibility, "allowed", alice_only)
    for p in published:
        await hub().receive(p.publication)
    assert batch_of(await a.receive_json_from(timeout=5)) == [
        (1, None, 1),
        (2, None, 2),
        (3, None, 3),
    ]
    entries = batch_of(await b.receive_json_from(timeout=5))
    while entries[-1][0] < 3:
        entries += batch_of(await b.receive_json_from(timeout=5))
    assert entries == [(1, None, 1), (3, None, 3)]
    for ws in (a, b):
        await ws.disconnect()


# --- publish() -------------------------------------------------------------------------------
def test_publish_inside_a_transaction_waits_for_the_commit():
    with transaction.atomic():
        assert publish("public:t", {"a": 1}) is None
        assert "public:t" not in history._memory.topics
    assert history._memory.topics["public:t"].offset == 1
    with pytest.raises(RuntimeError), transaction.atomic():
        publish("public:t", {"a": 2})
        raise RuntimeError("rolled back")
    assert history._memory.topics["public:t"].offset == 1
    assert publish("public:t", {"a": 3}) == 2


def test_publish_refuses_what_it_cannot_publish(realtime):
    realtime.TOPICS_MAX_DATA_BYTES = 50
    with pytest.raises(NotFound):
        publish("unknown:t", {})
    with pytest.raises(BadRequest):
        publish("public:t", {"x": object()})
    with pytest.raises(BadRequest):
        publish("public:t", {}, key="")
    with pytest.raises(TooLarge):
        publish("public:t", {"x": "y" * 100})


async def test_publish_on_the_event_loop_points_to_apublish():
    with pytest.raises(RuntimeError, match="apublish"):
        publish("public:t", {})


def test_an_idempotency_key_publishes_once():
    first = publish("public:t", {"a": 1}, idempotency_key="order-7")
    assert publish("public:t", {"a": 1}, idempotency_key="order-7") == first
    assert publish("public:t", {"a": 2}, idempotency_key="order-8") == first + 1


# --- HTTP --------------------------------------------------------------------------------------
def test_http_publish(api, make_user, alice):
    staff = api(make_user("boss", is_staff=True))
    url = "/api/topics/public:orders/publish/"
    created = staff.post(url, {"data": {"s": "paid"}, "idempotency_key": "x1"}, format="json")
    assert created.status_code == 201
    body = created.json()
    assert body == {"topic": "public:orders", "offset": 1, "epoch": body["epoch"]}
    again = staff.post(url, {"data": {"s": "paid"}, "idempotency_key": "x1"}, format="json")
    assert (again.status_code, again.json(), again["Idempotent-Replayed"]) == (201, body, "true")
    assert history._memory.topics["public:orders"].offset == 1
    assert api(alice).post(url, {"data": {}}, format="json").status_code == 403
    assert api().post(url, {"data": {}}, format="json").status_code == 401
    missing = staff.post("/api/topics/nope:x/publish/", {"data": {}}, format="json")
    assert (missing.status_code, missing.json()["code"]) == (404, "NOT_FOUND")
    for bad in ({"data": 3}, {}, {"data": {}, "extra": 1}, {"data": {}, "key": 5}, [1]):
        assert staff.post(url, bad, format="json").status_code == 400, bad
    assert staff.post("/api/topics/bad/publish/", {"data": {}}, format="json").status_code == 400


def test_http_publish_is_in_the_openapi_schema(api, alice):
    schema = api(alice).get("/api/schema/?format=json").json()
    assert "/api/topics/{topic}/publish/" in schema["paths"]


# --- model broadcasting --------------------------------------------------------------------------
async def test_public_rooms_changes_are_published_and_private_ones_never(alice):
    ws = await connect(alice)
    await subscribe(ws, "public:rooms")
    await sync_to_async(services.room_create)(user=alice, slug="lounge", name="Lounge")
    await sync_to_async(services.room_create)(
        user=alice, slug="hidden", name="Hidden", is_private=True
    )
    # One change at a time: publications of one key that wait together are
    # conflated to the latest (what a subscriber that falls behind gets).
    got = await next_frames(ws, 1)

    def rename():
        room = Room.objects.get(slug="lounge")
        room.name = "The Lounge"
        room.save()

    await sync_to_async(rename)()
    got += await next_frames(ws, 1)
    await sync_to_async(Room.objects.filter(slug="lounge").delete)()
    got += await next_frames(ws, 1)
    assert [f["data"] for f in got] == [
        {"event": "created", "room": {"slug": "lounge", "name": "Lounge"}},
        {"event": "updated", "room": {"slug": "lounge", "name": "The Lounge"}},
        {"event": "deleted", "room": {"slug": "lounge", "name": "The Lounge"}},
    ]
    assert {f["key"] for f in got} == {"lounge"}
    assert await ws.receive_nothing(timeout=0.3)
    await ws.disconnect()


async def test_a_per_object_check_decides_for_each_subscriber(alice, bob):
    """broadcast_model's `visible` runs per subscriber: here only the room's
    creator may see it."""
    from django_realtime.topics import broadcast_model
    from django_realtime.topics.broadcast import _broadcasts

    declared = _broadcasts["chat.room"]
    try:
        broadcast_model(
            Room,
            topic="public:mine",
            fields=["slug"],
            visible=lambda user, room: room.created_by_id == user.pk,
            check_fields=["created_by"],
        )
        a, b = await connect(alice), await connect(bob)
        await subscribe(a, "public:mine")
        await subscribe(b, "public:mine")
        await sync_to_async(services.room_create)(user=alice, slug="alices", name="A")
        frame = await a.receive_json_from(timeout=5)
        assert frame["data"] == {"event": "created", "room": {"slug": "alices"}}
        assert await b.receive_nothing(timeout=0.3)
        # A replay is checked the same way.
        b2 = await connect(bob)
        await subscribe(b2, "public:mine", since=0)
        assert await b2.receive_nothing(timeout=0.3)
        for ws in (a, b, b2):
            await ws.disconnect()
    finally:
        broadcast_model(
            Room,
            topic=declared.topic,
            fields=declared.fields,
            key=declared.key,
            visible=declared.check,
            check_fields=declared.check_fields,
        )


def test_bulk_changes_are_published_by_an_explicit_call(alice):
    Room.objects.bulk_create([Room(slug="b1", name="B1"), Room(slug="b2", name="B2")])
    assert "public:rooms" not in history._memory.topics  # no signals
    publish_instances(Room, Room.objects.filter(slug__in=["b1", "b2"]), event="created")
    held = history._memory.topics["public:rooms"]
    assert [p.data["room"]["slug"] for p in held.publications] == ["b1", "b2"]


async def test_a_room_moving_out_of_public_rooms_is_a_deletion_there(alice, bob):
    """Made private: `deleted` (under the old key); made public again:
    `created`; a new slug: `deleted` for the old and `created` for the new."""
    ws = await connect(bob)
    await subscribe(ws, "public:rooms")
    await sync_to_async(services.room_create)(user=alice, slug="den", name="Den")

    def change(**fields):
        room = Room.objects.get(name="Den")
        for name, value in fields.items():
            setattr(room, name, value)
        room.save()

    # One change at a time: publications of one key that wait together are
    # conflated to the latest (what a subscriber that falls behind gets).
    got = await next_frames(ws, 1)
    await sync_to_async(change)(is_private=True)
    got += await next_frames(ws, 1)
    await sync_to_async(change)(is_private=False)
    got += await next_frames(ws, 1)
    await sync_to_async(change)(slug="lair")
    got += await next_frames(ws, 2)
    assert [(f["data"]["event"], f["key"]) for f in got] == [
        ("created", "den"),
        ("deleted", "den"),
        ("created", "den"),
        ("deleted", "den"),
        ("created", "lair"),
    ]
    assert await ws.receive_nothing(timeout=0.3)
    await ws.disconnect()


async def test_a_user_banned_from_a_room_is_not_sent_its_changes(alice, bob, general):
    from chat.models import Membership

    await sync_to_async(Membership.objects.create)(room=general, user=bob, is_banned=True)
    banned, other = await connect(bob), await connect(alice)
    for ws in (banned, other):
        await subscribe(ws, "public:rooms")

    def rename():
        room = Room.objects.get(pk=general.pk)
        room.name = "General chat"
        room.save()

    await sync_to_async(rename)()
    assert (await other.receive_json_from(timeout=5))["data"]["event"] == "updated"
    assert await banned.receive_nothing(timeout=0.3)
    for ws in (banned, other):
        await ws.disconnect()


def test_rounds_that_take_long_to_hand_out_come_further_apart(realtime):
    """A round that took longer than its share of the process to hand out
    puts the next one off in proportion (TOPICS_HAND_OUT_SHARE), and what
    waits meanwhile is waiting for its round, not behind."""
    from django_realtime.topics.hub import TopicHub, _Topic

    realtime.TOPICS_ROUND_SECONDS = 0.02
    realtime.TOPICS_PROCESS_LAG_SECONDS = 0.02
    hub = TopicHub()
    assert hub._pause(0.005) == pytest.approx(0.015)  # quick: paced by the round
    assert hub.cycle == pytest.approx(0.02)
    assert hub._pause(0.03) == pytest.approx(0.03)  # at most half the process's time
    assert hub.cycle == pytest.approx(0.06)
    held = _Topic()
    held.waiting[1] = (pub(1), 100.0)
    assert not hub._behind(held, 100.0 + 0.07)  # within the round's wait and the lag
    assert hub._behind(held, 100.0 + 0.09)
    realtime.TOPICS_HAND_OUT_SHARE = 0.25
    assert hub._pause(0.03) == pytest.approx(0.09)
    realtime.TOPICS_HAND_OUT_SHARE = 1  # back to back
    assert hub._pause(0.03) <= 0 and hub.cycle == pytest.approx(0.03)
