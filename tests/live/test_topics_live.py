"""
Live-data topics (contract §8) over real sockets, with two server processes
on one Redis and the test PostgreSQL: publications cross processes in offset
order, a resume says `recovered` and replays exactly what was missed, a Redis
restarted empty gives a new epoch with the latest values, an idempotency key
publishes once, HTTP refusals, SSE resume by `EPOCH:OFFSET`, publish() from
another process, and a private room's changes never reaching a stranger.
"""

import asyncio
import json
import uuid

import httpx
import pytest

from chat.models import Room

from .conftest import Ws, manage_shell, slow_client

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]


@pytest.fixture
def people(make_user, token_for):
    staff = make_user("boss", is_staff=True)
    alice = make_user("alice")
    return {"staff": token_for(staff), "alice": token_for(alice)}


def topic() -> str:
    return f"public:t{uuid.uuid4().hex[:10]}"


async def subscribed(server, token, name, **fields) -> tuple[Ws, dict]:
    ws = await Ws.connect(server.ws, token=token)
    reply = await ws.request(
        {"type": "subscribe", "topic": name, **fields}, "subscribed", "error", timeout=10
    )
    return ws, reply


async def publications(ws: Ws, count: int, timeout: float = 15.0) -> list[dict]:
    return [await ws.recv_type("publication", timeout=timeout) for _ in range(count)]


async def until_last(ws: Ws, last: int, timeout: float = 15.0) -> list[dict]:
    """Publications until the one whose data says n == last."""
    got: list[dict] = []
    while not got or got[-1]["data"]["n"] < last:
        got.append(await ws.recv_type("publication", timeout=timeout))
    return got


async def publish(client: httpx.AsyncClient, name: str, **body) -> httpx.Response:
    return await client.post(f"/api/topics/{name}/publish/", json=body)


def staff_client(server, token) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.http, headers={"Authorization": f"Token {token}"}, timeout=10
    )


async def batched(ws: Ws, count: int, timeout: float = 15.0) -> list[dict]:
    """`count` publications from `publications` frames (a batching subscription)."""
    got: list[dict] = []
    while len(got) < count:
        frame = await ws.recv_type("publications", "publication", timeout=timeout)
        assert frame["type"] == "publications", "a batching subscription gets batches only"
        got += frame["publications"]
    return got


@pytest.mark.parametrize("batch", [False, True], ids=["frame each", "batches"])
async def test_publications_from_both_processes_reach_both_in_offset_order(
    server, server_b, people, batch
):
    name = topic()
    fields = {"batch": True} if batch else {}
    a, _ = await subscribed(server, people["alice"], name, **fields)
    b, _ = await subscribed(server_b, people["alice"], name, **fields)
    async with (
        staff_client(server, people["staff"]) as one,
        staff_client(server_b, people["staff"]) as two,
    ):
        replies = await asyncio.gather(
            *(publish(one if n % 2 else two, name, data={"n": n}) for n in range(40))
        )
    assert all(r.status_code == 201 for r in replies)
    offsets = sorted(r.json()["offset"] for r in replies)
    assert offsets == list(range(1, 41))
    for ws in (a, b):
        got = await (batched if batch else publications)(ws, 40)
        assert [f["offset"] for f in got] == offsets  # each once, in order
        assert await ws.quiet(0.3) == []
        await ws.close()


async def test_a_resume_on_the_other_process_replays_exactly_what_was_missed(
    server, server_b, people
):
    name = topic()
    ws, first = await subscribed(server, people["alice"], name)
    async with staff_client(server, people["staff"]) as client:
        await publish(client, name, data={"n": 1})
        assert [f["data"] for f in await publications(ws, 1)] == [{"n": 1}]
        await ws.close()
        for n in (2, 3, 4):
            await publish(client, name, data={"n": n}, key="k" if n == 3 else None)
    ws, again = await subscribed(server_b, people["alice"], name, since=1, epoch=first["epoch"])
    assert (again["recovered"], again["epoch"], again["offset"]) == (True, first["epoch"], 4)
    got = await publications(ws, 3)
    assert [(f["offset"], f["data"]["n"], f.get("key")) for f in got] == [
        (2, 2, None),
        (3, 3, "k"),
        (4, 4, None),
    ]
    assert await ws.quiet(0.3) == []
    await ws.close()


async def test_a_redis_restarted_empty_gives_a_new_epoch_and_the_latest_values(
    redis_server, daphnes, people
):
    one = daphnes(redis_url=redis_server.url)
    two = daphnes(redis_url=redis_server.url)
    staff, alice = people["staff"], people["alice"]
    name = "public:prices"
    live, first = await subscribed(two, alice, name)
    async with staff_client(one, staff) as client:
        for n in range(1, 5):
            assert (await publish(client, name, data={"n": n}, key=f"k{n % 2}")).status_code == 201
        await publications(live, 4)
        # Redis dies and comes back empty on the same port.
        redis_server.kill()
        redis_server.start()
        replies = []
        for _ in range(100):  # the first publish after the restart may find it away
            reply = await publish(client, name, data={"n": 5}, key="k1")
            if reply.status_code == 201:
                replies.append(reply)
                break
            assert reply.status_code == 503, reply.text
            await asyncio.sleep(0.2)
        assert replies, "no publish succeeded after Redis came back"
        assert replies[0].json()["offset"] == 1
        new_epoch = replies[0].json()["epoch"]
        assert new_epoch != first["epoch"]
        await publish(client, name, data={"n": 6}, key="k0")
    # A client resuming with the old epoch is told it was not recovered and
    # gets the latest value of each key.
    ws, again = await subscribed(one, alice, name, since=4, epoch=first["epoch"])
    assert (again["recovered"], again["epoch"], again["offset"]) == (False, new_epoch, 2)
    got = await publications(ws, 2)
    assert [(f["key"], f["data"]["n"]) for f in got] == [("k1", 5), ("k0", 6)]
    await ws.close()
    # The connection that stayed subscribed is moved to the new epoch too.
    moved = await live.recv_type("subscribed", timeout=30)
    assert (moved["epoch"], moved["recovered"]) == (new_epoch, False)
    latest = {f["key"]: f["data"]["n"] for f in await publications(live, 2)}
    assert latest == {"k1": 5, "k0": 6}
    await live.close()


async def test_the_same_idempotency_key_twice_publishes_once(server, server_b, people):
    name = topic()
    ws, _ = await subscribed(server_b, people["alice"], name)
    async with (
        staff_client(server, people["staff"]) as one,
        staff_client(server_b, people["staff"]) as two,
    ):
        first = await publish(one, name, data={"order": 7}, idempotency_key="pay-7")
        again = await publish(two, name, data={"order": 7}, idempotency_key="pay-7")
        other = await publish(two, name, data={"order": 8}, idempotency_key="pay-8")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert other.json()["offset"] == first.json()["offset"] + 1
    got = await publications(ws, 2)
    assert [f["data"] for f in got] == [{"order": 7}, {"order": 8}]
    assert await ws.quiet(0.3) == []
    await ws.close()


async def test_http_and_websocket_refusals(server, people):
    name = topic()
    async with (
        staff_client(server, people["alice"]) as alice,
        staff_client(server, people["staff"]) as staff,
    ):
        forbidden = await publish(alice, name, data={})
        unknown = await publish(staff, "nowhere:x", data={})
        bad = await publish(staff, name, data="not an object")
        anonymous = await httpx.AsyncClient(base_url=server.http).post(
            f"/api/topics/{name}/publish/", json={"data": {}}
        )
    assert forbidden.status_code == 403
    assert (unknown.status_code, unknown.json()["code"]) == (404, "NOT_FOUND")
    assert bad.status_code == 400
    assert anonymous.status_code == 401
    ws, refused = await subscribed(server, people["alice"], "nowhere:x")
    assert (refused["type"], refused["code"]) == ("error", "NOT_FOUND")
    assert (await ws.request({"type": "ping"}, "pong"))["type"] == "pong"  # carries on
    await ws.close()


async def test_sse_resumes_after_last_event_id(server, server_b, people):
    name = topic()
    headers = {"Authorization": f"Token {people['alice']}"}
    async with staff_client(server, people["staff"]) as client:
        await publish(client, name, data={"n": 1})
        async with httpx.AsyncClient(base_url=server_b.http, headers=headers, timeout=10) as sse:
            async with sse.stream("GET", f"/events/topics/{name}/") as stream:
                assert stream.status_code == 200
                lines = stream.aiter_lines()
                head = [await anext(lines) for _ in range(6)]
                event_id = next(line[4:] for line in head if line.startswith("id: "))
                epoch, _, offset = event_id.partition(":")
                assert offset == "1"
            for n in (2, 3):
                await publish(client, name, data={"n": n})
            resumed = headers | {"Last-Event-ID": event_id}
            async with sse.stream("GET", f"/events/topics/{name}/", headers=resumed) as stream:
                events, lines = [], stream.aiter_lines()
                while len([e for e in events if e.startswith('data: {"type":"publication')]) < 2:
                    events.append(await asyncio.wait_for(anext(lines), 10))
    ids = [line[4:] for line in events if line.startswith("id: ")]
    data = [json.loads(line[6:]) for line in events if line.startswith("data: ")]
    assert data[0]["type"] == "subscribed" and data[0]["recovered"] is True
    assert [d["data"]["n"] for d in data[1:]] == [2, 3]
    assert ids[-2:] == [f"{epoch}:2", f"{epoch}:3"]
    # A topic the user may not subscribe to is a 404, as an unknown one.
    async with httpx.AsyncClient(base_url=server.http, headers=headers, timeout=10) as sse:
        assert (await sse.get("/events/topics/nowhere:x/")).status_code == 404


async def test_publish_from_a_management_shell_reaches_subscribers(server, redis_url, people):
    name = topic()
    ws, _ = await subscribed(server, people["alice"], name)
    out = await asyncio.to_thread(
        manage_shell,
        "from django_realtime.topics import publish\n"
        f"print(publish({name!r}, {{'from': 'shell'}}, key='x'))",
        redis_url=redis_url,
    )
    assert out.strip().splitlines()[-1] == "1"  # the offset publish() returned
    got = await publications(ws, 1)
    assert got[0] == {
        "type": "publication",
        "topic": name,
        "offset": 1,
        "key": "x",
        "data": {"from": "shell"},
    }
    await ws.close()


async def test_a_private_rooms_changes_never_reach_a_stranger(server, server_b, people):
    ws, _ = await subscribed(server_b, people["alice"], "public:rooms")
    async with staff_client(server, people["staff"]) as staff:
        hidden = await staff.post(
            "/api/rooms/", json={"slug": "hush", "name": "Hush", "is_private": True}
        )
        shown = await staff.post(
            "/api/rooms/", json={"slug": "open-" + uuid.uuid4().hex[:6], "name": "Open"}
        )
    assert hidden.status_code == shown.status_code == 201
    got = await publications(ws, 1)
    assert got[0]["data"] == {
        "event": "created",
        "room": {"slug": shown.json()["slug"], "name": "Open"},
    }
    await asyncio.to_thread(Room.objects.filter(slug="hush").update, name="Renamed")
    assert await ws.quiet(0.5) == []
    await ws.close()


async def stalled_subscriber(server, token: str, name: str):
    """A client that subscribes, then reads nothing."""
    conn = await slow_client(server, token)
    await conn.send(json.dumps({"type": "subscribe", "topic": name}))
    return conn


async def test_a_stalled_subscriber_gets_the_latest_value_of_each_key_and_nobody_waits(
    protocol_server, redis_url, people
):
    """1,500 publications of 8 KB (12 MB: more than the kernel's buffers
    take) over 5 keys, published by another process as fast as it can: the
    subscriber that reads gets them in order, every one while its process
    keeps up and the latest of each key where the process itself fell behind
    (the hub conflates then, rather than queue); the one that stopped reading is neither
    closed nor sent the backlog when it reads again, but the latest value of
    each key, in offset order."""
    name, count = topic(), 1500
    reader, _ = await subscribed(protocol_server, people["alice"], name)
    stalled = await stalled_subscriber(protocol_server, people["alice"], name)
    await asyncio.sleep(0.5)
    code = (
        "import secrets\n"
        "from django_realtime.topics import publish\n"
        f"for n in range(1, {count + 1}):\n"
        # Random padding: uvicorn compresses frames (permessage-deflate).
        f"    data = {{'n': n, 'pad': secrets.token_urlsafe(6000)}}\n"
        f"    publish({name!r}, data, key=f'k{{n % 5}}')\n"
    )
    shell = asyncio.create_task(asyncio.to_thread(manage_shell, code, redis_url=redis_url))
    got = await until_last(reader, count, timeout=60)
    await shell
    # Every one while the process keeps up; the latest of each key, in order,
    # where it fell behind (a loaded machine): never one twice or out of order.
    numbers = [f["data"]["n"] for f in got]
    assert numbers == sorted(set(numbers)), "out of order or twice"
    assert {f["key"]: f["data"]["n"] for f in got} == {
        f"k{n % 5}": n for n in range(count - 4, count + 1)
    }
    # The stalled client reads again.
    frames = []
    try:
        while True:
            frames.append(json.loads(await asyncio.wait_for(stalled.recv(), 2)))
    except TimeoutError:
        pass
    offsets = [f["offset"] for f in frames if f["type"] == "publication"]
    assert offsets == sorted(set(offsets)), "out of order or twice"
    assert len(offsets) < count / 2, f"{len(offsets)} of {count}: nothing was conflated"
    latest = {f["key"]: f["data"]["n"] for f in frames if f["type"] == "publication"}
    assert latest == {f"k{n % 5}": n for n in range(count - 4, count + 1)}
    await stalled.send(json.dumps({"type": "ping"}))  # still open
    assert json.loads(await asyncio.wait_for(stalled.recv(), 5)) == {"type": "pong"}
    await stalled.close()
    await reader.close()
