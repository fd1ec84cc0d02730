"""SSE topic streams as members of the process's topic hub (docs/topics.md):
many streams on one process read the history once per gap, a stream
opened while publishers race gets each publication once and in order, and
per-user sight holds on the live path. Through sse.pump, in one process
(the in-memory layer and history)."""

import asyncio
import random
import re

import pytest
from asgiref.sync import sync_to_async

from django_realtime import sse
from django_realtime.topics import fragments, history
from django_realtime.topics.hub import hub
from django_realtime.topics.names import parse
from django_realtime.topics.views import HtmlTopicStream, TopicStream
from project.models import Task

pytestmark = pytest.mark.django_db(transaction=True)
TOPIC = "live:hubbed"
EVENT_ID = re.compile(r"^id: (\w+):(\d+)$", re.M)


@pytest.fixture(autouse=True)
def _fresh_history(realtime):
    realtime.TOPICS = {"live": {}}
    history._memory.topics.clear()
    yield
    history._memory.topics.clear()


def open_stream(user, kind, topic=TOPIC, position=(None, None)):
    namespace = parse(topic)
    if kind == "json":
        stream = TopicStream(user=user, topic=topic, namespace=namespace, position=position)
    else:
        stream = HtmlTopicStream(
            fmt=kind, user=user, topic=topic, namespace=namespace, position=position
        )
    return sse.pump(stream)


def sent(chunk: bytes) -> list[tuple[int, str]]:
    """(offset, data) of each event carrying a publication or a fragment."""
    out = []
    for event in chunk.decode().split("\n\n"):
        data = "\n".join(line[6:] for line in event.split("\n") if line.startswith("data: "))
        found = EVENT_ID.search(event)
        if data and found and "event: subscribed" not in event:
            out.append((int(found.group(2)), data))
    return out


async def read_until(body, last: int, seconds: float = 5) -> list[tuple[int, str]]:
    got: list[tuple[int, str]] = []
    while not got or got[-1][0] < last:
        got += sent(await asyncio.wait_for(anext(body), seconds))
    return got


async def store_publish(n: int, data=None):
    """A publication in the history, its doorbell not rung (the test rings it)."""
    published = await history.history().apublish(
        TOPIC,
        data if data is not None else fragments.fragment_data("append", "list", f"<i>{n}</i>"),
        namespace=parse(TOPIC),
        key=None,
        idempotency_key=None,
        audience=None,
    )
    return published.publication


async def test_streams_on_one_process_read_the_history_once_per_gap(alice, make_user):
    """Twelve pages (JSON, Turbo, htmx) on one process; two publishers'
    doorbells arrive in the wrong order. The hub fills the gap with one
    history read; every page gets 1, 2, 3 once, in order, and the same
    frame text is built once per round, not per page."""
    bob = await sync_to_async(make_user)("bob")
    bodies = [
        open_stream(user, kind) for user in (alice, bob) for kind in ("json", "turbo", "htmx") * 2
    ]
    for body in bodies:
        assert (await anext(body)).startswith(b"retry: 3000\nid: ")
    store = history.history()
    reads = []
    state = store.state

    async def counted_state(*args, **kwargs):
        reads.append(args)
        return await state(*args, **kwargs)

    store.state = counted_state  # type: ignore[method-assign]
    try:
        first, second, third = [await store_publish(n) for n in (1, 2, 3)]
        await hub().receive(third)  # overtook the other two
        await hub().receive(first)
        await hub().receive(second)
        got = [await read_until(body, 3) for body in bodies]
    finally:
        del store.state
    assert all([offset for offset, _ in events] == [1, 2, 3] for events in got)
    assert (
        '"data":{"fragment":{"action":"append","target":"list","html":"<i>2</i>"}' in (got[0][1][1])
    )
    assert got[1][1][1] == (
        '<turbo-stream action="append" target="list"><template><i>2</i></template></turbo-stream>'
    )
    assert got[2][1][1].startswith('<template><div hx-swap-oob="beforeend:#list">')
    assert len(reads) == 1  # one gap, one read, for twelve pages
    for body in bodies:
        await body.aclose()
    assert TOPIC not in hub().topics  # the last page gone, the hub left the topic


@pytest.mark.parametrize("kind", ["json", "turbo"])
async def test_a_stream_opened_while_publishers_race_gets_each_once_in_order(alice, kind):
    """A page rendered at some offset opens its stream while two publishers
    publish and their doorbells cross: from the render on, it gets every
    publication once, in order (the replay and the hub's rounds overlap)."""
    random.seed(7)
    listener = open_stream(alice, kind)  # keeps the hub on the topic meanwhile
    await anext(listener)

    async def publishers():
        for n in range(1, 61, 2):
            pair = [await store_publish(n), await store_publish(n + 1)]
            random.shuffle(pair)
            for publication in pair:
                await hub().receive(publication)
            await asyncio.sleep(0.003)

    racing = asyncio.ensure_future(publishers())
    await asyncio.sleep(0.05)
    epoch, rendered_at = history._memory.position(TOPIC, namespace=parse(TOPIC))
    assert 0 < rendered_at < 60
    page = open_stream(alice, kind, position=(epoch, rendered_at))
    got = sent(await anext(page))  # the replay
    await racing
    got += await read_until(page, 60) if not got or got[-1][0] < 60 else []
    assert [offset for offset, _ in got] == list(range(rendered_at + 1, 61))
    assert [offset for offset, _ in await read_until(listener, 60)][-1] == 60
    await page.aclose()
    await listener.aclose()


async def test_model_fragments_reach_only_who_may_see_them_live(alice, make_user):
    """The demo's tasks (project.live: seen by their owner and by staff),
    handed out by the hub: each page gets its own action, decided once per
    round for every page's user."""
    bob = await sync_to_async(make_user)("bob")
    boss = await sync_to_async(make_user)("boss", is_staff=True)
    pages = {
        user.username: open_stream(user, "turbo", topic="live:tasks") for user in (alice, bob, boss)
    }
    for body in pages.values():
        await anext(body)
    task = await sync_to_async(Task.objects.create)(title="write <docs>", owner=alice)
    for name in ("alice", "boss"):
        ((offset, html),) = await read_until(pages[name], 1)
        assert 'action="append" target="tasks"' in html and "write &lt;docs&gt;" in html
    task.owner = bob
    await sync_to_async(task.save)()
    ((_, html),) = await read_until(pages["alice"], 2)
    assert html == f'<turbo-stream action="remove" target="task-{task.pk}"></turbo-stream>'
    ((_, html),) = await read_until(pages["boss"], 2)
    assert f'action="replace" target="task-{task.pk}"' in html
    # bob saw nothing of the first save: the second is his first fragment.
    ((offset, html),) = await read_until(pages["bob"], 2)
    assert offset == 2 and 'action="append" target="tasks"' in html
    for body in pages.values():
        await body.aclose()
