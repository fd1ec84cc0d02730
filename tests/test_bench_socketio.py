"""The load tool's Node peers (bench/loadtest.py's targets socketio and
socketio-pg): started through its Stack and spoken to by its own client over
Socket.IO's wire protocol, a message posted in a room reaches the room's
members once, in order, and nobody outside it; socketio-pg stores each once."""

import asyncio
import importlib
import shutil
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVER_DIR = ROOT / "bench/baselines/socketio"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None,
    reason="node not found: install the Debian/Ubuntu package `nodejs` (make test does)",
)


@pytest.fixture
def loadtest(monkeypatch):
    """bench/loadtest.py, its server's packages installed from their lock.
    Importing it sets METRICS_TOKEN when unset; monkeypatch takes it back."""
    monkeypatch.setenv("METRICS_TOKEN", "bench-metrics-token")
    if not (SERVER_DIR / "node_modules/socket.io/package.json").exists():
        npm = shutil.which("npm") or str(ROOT / ".venv/bin/npm")
        subprocess.run(
            [npm, "ci", "--prefix", str(SERVER_DIR), "--no-audit", "--no-fund"],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return importlib.import_module("bench.loadtest")


async def until(condition, timeout: float = 20.0) -> None:
    """Wait, at most `timeout` seconds, until condition() holds (the clients'
    readers fill in what they receive; nothing to await on)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("target", ["socketio", "socketio-pg"])
async def test_a_post_reaches_its_room_once_in_order(loadtest, target):
    stack = loadtest.Stack(target, pin=False, users=3, rooms=2).start()
    protocol = loadtest.Protocol(target, stack.ports, rooms=2)
    # Clients 0 and 2 are in room0, client 1 in room1 (client i joins room i % 2).
    clients = [loadtest.Client(i, i % 2, protocol, None) for i in range(3)]
    sender, other_room, member = clients
    try:
        await asyncio.gather(*(c.connect() for c in clients))
        posted = []
        for n in range(3):
            posted.append(f"0-{n}:{time.time()}")
            await sender.ws.send(protocol.send(0, posted[-1]))
            if n == 1 and target == "socketio-pg":
                # A retry of a stored post (same client_id) is not broadcast again.
                await retry(loadtest, protocol, stack)
        await until(lambda: len(member.latencies) == len(sender.latencies) == 3)
        await asyncio.sleep(0.3)  # anything extra would arrive meanwhile
        for client in (sender, member):
            assert client.seen == set(posted)
            assert len(client.latencies) == 3
            assert client.duplicates == 0 and client.out_of_order == 0
        assert other_room.seen == set()
        if target == "socketio-pg":
            assert member.last_seq == 3
            with psycopg.connect(stack.pg.url) as db:
                query = "SELECT room_id, seq, content FROM messages ORDER BY id"
                rows = db.execute(query).fetchall()
            assert rows == [("room0", n + 1, content) for n, content in enumerate(posted)]
    finally:
        await asyncio.gather(*(c.close() for c in clients))
        stack.stop()


async def retry(loadtest, protocol, stack) -> None:
    """Post room0's latest message again under its client_id: its poster is
    answered `ack` with where it went, and the room gets nothing new."""
    with psycopg.connect(stack.pg.url) as db:
        await until(lambda: db.execute("SELECT count(*) FROM messages").fetchone()[0] == 2)
        client_id, content, seq = db.execute(
            "SELECT client_id, content, seq FROM messages ORDER BY id DESC LIMIT 1"
        ).fetchone()
    poster = loadtest.Client(99, 0, protocol, None)
    await poster.connect()
    poster.reader.cancel()
    frame = {"room": "room0", "content": content, "client_id": client_id}
    await poster.ws.send(protocol.event("message", frame))
    while True:
        name, data = protocol.event_of(await asyncio.wait_for(poster.ws.recv(), 20))
        if name == "ack":
            assert data["client_id"] == client_id and data["seq"] == seq
            break
    await poster.ws.close()
