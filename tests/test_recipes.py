"""Every recipe of docs/integration.md runs as it stands: each test reads
its recipe's code block (the one starting `# recipe: <name>`) from the page
and runs it, with `Task` the demo's model (an `owner`, a `title`, `done`)."""

import re
from pathlib import Path

import httpx
import pytest
from django.core import checks
from django.db.models.signals import post_delete, post_save
from django.test import Client, override_settings

from django_realtime import namespace
from django_realtime.testing import capture
from django_realtime.topics import history, names
from project import live
from project.models import Task

DOC = Path(__file__).resolve().parents[1] / "docs" / "integration.md"
BLOCK = re.compile(r"```python\n(# recipe: ([\w-]+)\n.*?)```", re.S)
RECIPES = {name: code for code, name in BLOCK.findall(DOC.read_text())}


def run(name: str, **given) -> dict:
    scope = {"Task": Task, **given}
    exec(compile(RECIPES[name], f"integration.md:{name}", "exec"), scope)  # noqa: S102
    return scope


def test_every_recipe_of_the_page_has_a_test():
    assert set(RECIPES) == {
        "own-objects",
        "counter",
        "notify-signal",
        "static-files",
        "metrics",
        "processes",
        "shared-redis",
    }


@pytest.fixture
def topics(realtime):
    """Namespaces registered by a recipe are forgotten after it; the demo's
    live board gets its own broadcast of Task back."""
    realtime.TOPICS = {}
    history._memory.topics.clear()
    registered = dict(names._registered)
    yield
    names._registered.clear()
    names._registered.update(registered)
    history._memory.topics.clear()
    live.register()


@pytest.mark.django_db(transaction=True)
def test_own_objects_a_task_changing_hands_is_deleted_from_its_old_owners_topic(topics, make_user):
    alice, bob = make_user("alice"), make_user("bob")
    scope = run("own-objects")
    own_topic = scope["own_topic"]
    assert own_topic(alice, f"tasks:user-{alice.pk}") and not own_topic(
        bob, f"tasks:user-{alice.pk}"
    )
    with capture() as captured:
        task = Task.objects.create(owner=alice, title="write", done=False)
        task.owner = bob
        task.save()
    seen = [(p.topic, p.data["event"], p.data["task"]["title"]) for p in captured.publications]
    assert seen == [
        (f"tasks:user-{alice.pk}", "created", "write"),
        (f"tasks:user-{alice.pk}", "deleted", "write"),
        (f"tasks:user-{bob.pk}", "created", "write"),
    ]


@pytest.mark.django_db(transaction=True)
def test_counter_publishes_the_open_count_on_its_own_topic(topics, make_user):
    alice = make_user("alice")
    scope = run("counter")
    try:
        with capture() as captured:
            Task.objects.create(owner=alice, title="a")
            done = Task.objects.create(owner=alice, title="b")
            done.done = True
            done.save()
            done.delete()
        counts = [p.data for p in captured.publications if p.topic == "stats:open-tasks"]
        assert counts == [{"open": 1}, {"open": 2}, {"open": 1}, {"open": 1}]
        assert {p.key for p in captured.publications if p.topic == "stats:open-tasks"} == {"open"}
    finally:
        for signal in (post_save, post_delete):
            signal.disconnect(scope["count_open_tasks"], sender=Task)


@pytest.mark.django_db(transaction=True)
def test_notify_from_a_signal_notifies_the_owner_after_commit(topics, make_user):
    bob = make_user("bob")
    scope = run("notify-signal")
    try:
        with capture() as captured:
            Task.objects.create(owner=bob, title="review")
        assert [(n.recipient_id, n.kind, n.data) for n in captured.notifications] == [
            (bob.pk, "task", {"title": "review"})
        ]
    finally:
        post_save.disconnect(scope["task_assigned"], sender=Task)


async def test_static_files_are_served_by_the_asgi_app_under_daphne_or_uvicorn():
    application = run("static-files")["application"]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application), base_url="http://testserver"
    ) as client:
        response = await client.get("/static/realtime/client.js")
    assert response.status_code == 200 and "RealtimeClient" in response.text


@pytest.mark.urls("tests.front_door.urls")
@pytest.mark.django_db
def test_metrics_answers_the_scraper_with_the_token(monkeypatch):
    monkeypatch.setenv("METRICS_TOKEN", "from-the-env")
    with override_settings(REALTIME=run("metrics")["REALTIME"]):
        client = Client()
        assert client.get("/rt/metrics").status_code == 404
        ok = client.get("/rt/metrics", headers={"Authorization": "Bearer from-the-env"})
        assert ok.status_code == 200 and b"realtime_" in ok.content


def realtime_findings() -> list[str]:
    return [f"{m.id}: {m.msg}" for m in checks.run_checks() if (m.id or "").startswith("realtime")]


def test_several_processes_share_one_redis_layer_and_pass_the_checks(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6390/3")
    scope = run("processes")
    with override_settings(CHANNEL_LAYERS=scope["CHANNEL_LAYERS"], REALTIME={"REDIS_URL": ""}):
        assert namespace.group_channel_prefix().startswith("asgi.db3")
        assert not [f for f in realtime_findings() if ".E" in f.split(":")[0]]


def test_sites_sharing_a_redis_database_get_their_own_prefix():
    scope = run("shared-redis")
    with override_settings(CHANNEL_LAYERS=scope["CHANNEL_LAYERS"]):
        assert namespace.key_prefix().startswith("shop")
        assert namespace.layer_prefix() == "shop"
