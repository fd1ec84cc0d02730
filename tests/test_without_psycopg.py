"""psycopg is the `postgres` extra: without it the package imports, and a
SQLite site chats and publishes (pyproject.toml; django_realtime.pgpool)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SITE = """
import sys
sys.modules["psycopg"] = None  # not installed: `import psycopg` raises ImportError
import importlib, pkgutil
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
for package in ("chat", "django_realtime", "presence", "notifications"):
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        if ".migrations." not in info.name and not info.name.endswith(".asgi_uvicorn"):
            importlib.import_module(info.name)
assert sys.modules["psycopg"] is None, "something imported psycopg"

import asyncio
import uuid
from django.contrib.auth import get_user_model
from chat import services
from django_realtime import publish

alice = get_user_model().objects.create_user(username="alice", password="pw")
services.room_create(user=alice, slug="general", name="General")
sent = services.message_send(user=alice, slug="general", content="hi", client_id=str(uuid.uuid4()))
again = services.message_send_async(
    user=alice, slug="general", content="again", client_id=str(uuid.uuid4())
)
later = asyncio.run(again)
offset = publish("public:news", {"n": 1})
print("sent", sent.seq, later.seq, "published", offset)
"""


def test_a_sqlite_site_without_psycopg_chats_and_publishes(tmp_path):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'site.sqlite3'}",
        "REDIS_URL": "",
    }
    result = subprocess.run(
        [sys.executable, "-c", SITE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "sent 1 2 published 1" in result.stdout, result.stdout
