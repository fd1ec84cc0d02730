"""Live HTML in one process (contract §10, docs/integration.md): html_stream's
actions and their Turbo and htmx frames, autoescaping, the after-commit rule,
the refresh debounce, model fragments per user, the stream's resume rules
and the template tags. In browsers: tests/browser/test_live_html.py."""

import time

import pytest
from asgiref.sync import async_to_sync
from django.db import transaction
from django.template import Context, Template

from django_realtime import html_stream
from django_realtime.topics import fragments, history
from django_realtime.topics import html as html_module
from django_realtime.topics.names import parse
from django_realtime.topics.views import HtmlTopicStream
from project.models import Task

pytestmark = pytest.mark.django_db(transaction=True)
TOPIC = "live:tasks"


@pytest.fixture(autouse=True)
def _fresh_history(realtime):
    realtime.TOPICS = {"live": {}, "tiny": {"history_size": 2}}
    history._memory.topics.clear()
    yield
    history._memory.topics.clear()


def held(topic=TOPIC):
    return list(history._memory.topics[topic].publications)


def T(action, target, html):  # noqa: N802 - reads as the frame it builds
    return (
        f'<turbo-stream action="{action}" target="{target}">'
        f"<template>{html}</template></turbo-stream>"
    )


def stream(user, topic=TOPIC, position=(None, None), fmt="turbo"):
    return HtmlTopicStream(
        fmt=fmt, user=user, topic=topic, namespace=parse(topic), position=position
    )


def frames(chunks):
    """The HTML of each message event, with its id."""
    out = []
    for chunk in chunks:
        text = chunk.decode()
        data = [line[6:] for line in text.split("\n") if line.startswith("data: ")]
        ids = [line[4:] for line in text.split("\n") if line.startswith("id: ")]
        if data:
            out.append(("\n".join(data), ids[0] if ids else None))
    return out


def render_for(user, since):
    """What a page rendered at `since` is sent now (turbo)."""
    epoch = history._memory.topics[TOPIC].epoch
    return [
        html for html, _ in frames(async_to_sync(stream(user, position=(epoch, since)).start)())
    ]


# --- actions and frames ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("action", "turbo", "htmx"),
    [
        (
            "append",
            T("append", "t", "<li>x</li>"),
            '<template><div hx-swap-oob="beforeend:#t"><li>x</li></div></template>',
        ),
        (
            "prepend",
            T("prepend", "t", "<li>x</li>"),
            '<template><div hx-swap-oob="afterbegin:#t"><li>x</li></div></template>',
        ),
        (
            "replace",
            T("replace", "t", "<li>x</li>"),
            '<template><li hx-swap-oob="outerHTML:#t">x</li></template>',
        ),
        (
            "update",
            T("update", "t", "<li>x</li>"),
            '<template><div hx-swap-oob="innerHTML:#t"><li>x</li></div></template>',
        ),
        (
            "before",
            T("before", "t", "<li>x</li>"),
            '<template><div hx-swap-oob="beforebegin:#t"><li>x</li></div></template>',
        ),
        (
            "after",
            T("after", "t", "<li>x</li>"),
            '<template><div hx-swap-oob="afterend:#t"><li>x</li></div></template>',
        ),
    ],
)
def test_each_action_is_one_publication_sent_as_turbo_and_htmx_frames(alice, action, turbo, htmx):
    offset = getattr(html_stream(TOPIC), action)("t", html="<li>x</li>")
    (publication,) = held()
    assert publication.offset == offset
    assert publication.data == {"fragment": {"action": action, "target": "t", "html": "<li>x</li>"}}
    assert render_for(alice, offset - 1) == [turbo]
    epoch = history._memory.topics[TOPIC].epoch
    chunks = async_to_sync(stream(alice, position=(epoch, 0), fmt="htmx").start)()
    assert frames(chunks) == [(htmx, f"{epoch}:{offset}")]


def test_remove_and_refresh_frames(alice):
    html_stream(TOPIC).remove("task-1")
    html_stream(TOPIC).refresh()
    assert render_for(alice, 0) == [
        '<turbo-stream action="remove" target="task-1"></turbo-stream>',
        '<turbo-stream action="refresh"></turbo-stream>',
    ]
    assert fragments.htmx("remove", "task-1", "") == (
        '<template><div hx-swap-oob="delete:#task-1"></div></template>'
    )
    assert 'http-equiv="refresh"' in fragments.htmx("refresh", None, "")


def test_table_rows_parse_where_they_go_with_htmx():
    assert fragments.htmx("append", "rows", "<tr><td>1</td></tr>") == (
        '<template><tbody hx-swap-oob="beforeend:#rows"><tr><td>1</td></tr></tbody></template>'
    )


def test_a_multi_line_fragment_is_one_event_of_several_data_lines():
    assert fragments.sse_message("<li>\na\r\n</li>", "e:3") == (
        b"id: e:3\ndata: <li>\ndata: a\ndata: </li>\n\n"
    )


def test_templates_autoescape_and_html_is_sent_as_given(alice):
    html_stream(TOPIC).append(
        "tasks",
        template="project/live/task.html",
        context={"task": Task(pk=7, title="<img src=x onerror=alert(1)>", owner=alice)},
    )
    html_stream(TOPIC).append("tasks", html="<b>bold</b>")
    first, second = (p.data["fragment"]["html"] for p in held())
    assert "&lt;img src=x onerror=alert(1)&gt;" in first and "<img" not in first
    assert second == "<b>bold</b>"


def test_bad_calls_are_refused_before_anything_is_published(alice):
    with pytest.raises(TypeError):
        html_stream(TOPIC).append("tasks")  # neither template nor html
    with pytest.raises(TypeError):
        html_stream(TOPIC).append("", html="x")
    with pytest.raises(Exception, match="no topic"):
        html_stream("nowhere:x")
    assert TOPIC not in history._memory.topics or not held()


def test_inside_a_transaction_the_offset_is_none_until_the_commit(alice):
    with transaction.atomic():
        assert html_stream(TOPIC).append("tasks", html="<li>a</li>") is None
        assert TOPIC not in history._memory.topics or not held()
    assert [p.data["fragment"]["html"] for p in held()] == ["<li>a</li>"]
    with pytest.raises(RuntimeError), transaction.atomic():
        html_stream(TOPIC).append("tasks", html="<li>rolled back</li>")
        raise RuntimeError
    assert len(held()) == 1


def test_refreshes_within_the_window_are_sent_once_then_once_more(alice, monkeypatch):
    monkeypatch.setattr(html_module, "REFRESH_WINDOW_SECONDS", 0.2)
    monkeypatch.setattr(html_module, "refreshes", html_module.Refreshes())
    first = html_stream(TOPIC).refresh()
    assert first == 1
    assert [html_stream(TOPIC).refresh() for _ in range(5)] == [None] * 5
    assert len(held()) == 1
    deadline = time.monotonic() + 5
    while len(held()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert [p.data for p in held()] == [fragments.fragment_data("refresh")] * 2


# --- the stream's resume rules -----------------------------------------------------------
def test_a_page_gets_what_came_after_its_render_and_nothing_before(alice):
    html_stream(TOPIC).append("tasks", html="<li>before</li>")
    epoch, rendered_at = history._memory.position(TOPIC, namespace=parse(TOPIC))
    html_stream(TOPIC).append("tasks", html="<li>after 1</li>")
    html_stream(TOPIC).append("tasks", html="<li>after 2</li>")
    chunks = async_to_sync(stream(alice, position=(epoch, rendered_at)).start)()
    sent = frames(chunks)
    assert [html for html, _ in sent] == [
        T("append", "tasks", "<li>after 1</li>"),
        T("append", "tasks", "<li>after 2</li>"),
    ]
    assert [i for _, i in sent] == [f"{epoch}:2", f"{epoch}:3"]


def test_a_resume_past_the_history_or_from_another_epoch_is_a_refresh(alice):
    for n in range(5):
        html_stream("tiny:t").append("x", html=f"<i>{n}</i>")
    epoch = history._memory.topics["tiny:t"].epoch
    for position in [(epoch, 1), ("elsewhere", 4)]:
        sent = frames(async_to_sync(stream(alice, "tiny:t", position).start)())
        assert [html for html, _ in sent] == ['<turbo-stream action="refresh"></turbo-stream>']


def test_json_publications_on_the_topic_are_not_sent_as_html(alice):
    from django_realtime.topics import publish

    publish(TOPIC, {"n": 1})
    html_stream(TOPIC).remove("x")
    assert render_for(alice, 0) == ['<turbo-stream action="remove" target="x"></turbo-stream>']


# --- model fragments, per user -----------------------------------------------------------
def test_model_fragments_follow_each_users_sight(alice, bob, make_user):
    """The demo's tasks: seen by their owner and by staff. A task given to
    another user leaves its old owner's page and enters the new one's."""
    boss = make_user("boss", is_staff=True)
    task = Task.objects.create(title="write <docs>", owner=alice)
    created = render_for(alice, 0)
    assert len(created) == 1 and 'action="append" target="tasks"' in created[0]
    assert "write &lt;docs&gt;" in created[0] and f'id="task-{task.pk}"' in created[0]
    assert render_for(bob, 0) == []

    task.owner = bob
    task.save()
    assert render_for(alice, 1) == [
        f'<turbo-stream action="remove" target="task-{task.pk}"></turbo-stream>'
    ]
    assert 'action="append" target="tasks"' in render_for(bob, 1)[0]
    assert f'action="replace" target="task-{task.pk}"' in render_for(boss, 1)[0]

    task.title = "write docs"
    task.save()
    assert render_for(alice, 2) == []
    assert f'action="replace" target="task-{task.pk}"' in render_for(bob, 2)[0]

    pk = task.pk
    task.delete()
    assert render_for(bob, 3) == [
        f'<turbo-stream action="remove" target="task-{pk}"></turbo-stream>'
    ]
    assert render_for(alice, 3) == []
    # JSON subscribers of the topic still get the model's event.
    assert held()[-1].data["event"] == "deleted"


# --- the template tags -------------------------------------------------------------------
def test_the_stream_tag_carries_the_topics_position_at_render(alice):
    html_stream(TOPIC).append("tasks", html="<li>1</li>")
    epoch = history._memory.topics[TOPIC].epoch
    page = Template('{% load realtime %}{% realtime_stream "live:tasks" %}').render(Context())
    assert page == (
        '<turbo-stream-source id="realtime-stream-live-tasks" '
        f'src="/events/topics/live:tasks/?format=turbo&amp;last_event_id={epoch}%3A1">'
        "</turbo-stream-source>"
    )
    page = Template('{% load realtime %}{% realtime_stream "live:tasks" client="htmx" %}').render(
        Context()
    )
    assert 'hx-ext="sse"' in page and 'sse-swap="message"' in page
    assert (
        f'sse-connect="/events/topics/live:tasks/?format=htmx&amp;last_event_id={epoch}%3A1"'
        in page
    )


def test_the_client_tag_names_the_asset_under_the_sites_prefix():
    page = Template("{% load realtime %}{% realtime_client_js %}").render(Context())
    assert '<script type="importmap">{"imports": {"django-realtime": "/assets/client.js"}}' in page
    assert (
        'id="rt-config"' in page and '<link rel="modulepreload" href="/assets/client.js">' in page
    )
