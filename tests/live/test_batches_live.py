"""
Posts under load with batching active (chat.services.batches), on two daphne
processes sharing Redis and PostgreSQL: sockets that fire their posts without
waiting for acks, each post also retried at once from another socket on the
other process. Every client_id is stored once and acked alike wherever it
went, the room's seqs are gap-free, every watcher gets every message once in
order, and a resume replays exactly what came after.
"""

import asyncio
import re
import uuid

import httpx
import pytest

from chat.models import Message, Room

from .conftest import METRICS_HEADERS, ServerProcess, Ws

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

USERS = ("alice", "bob", "carol", "dave")
PER_SOCKET = 15


@pytest.fixture
def tokens(make_user, token_for):
    Room.objects.create(slug="general", name="General")
    return {name: token_for(make_user(name)) for name in USERS}


async def batched_posts(server: ServerProcess) -> float:
    """Posts the process stored together with others (its /metrics)."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{server.http}/metrics", headers=METRICS_HEADERS)).text

    def sample(name: str) -> float:
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        return float(found.group(1)) if found else 0.0

    return sample("realtime_post_batch_size_sum") - sample(
        'realtime_post_batch_size_bucket{le="1.0"}'
    )


async def fire(ws: Ws, posts: list[tuple[str, str]]) -> dict[str, dict]:
    """Send every post at once, then read the acks: client_id -> ack."""
    for client_id, content in posts:
        await ws.send(
            {"type": "message", "room": "general", "client_id": client_id, "content": content}
        )
    acks: dict[str, dict] = {}
    while len(acks) < len(posts):
        frame = await ws.recv_type("ack", "error", timeout=30)
        assert frame["type"] == "ack", frame
        acks[frame["client_id"]] = frame
    return acks


async def test_fired_and_retried_posts_are_stored_once_in_order(unlimited_server, server_b, tokens):
    servers = (unlimited_server, server_b)
    before = [await batched_posts(s) for s in servers]
    watchers = [await Ws.connect(s.ws, token=tokens["alice"]) for s in servers]
    for watcher in watchers:
        assert (await watcher.join("general"))["type"] == "joined"

    # Each user: one socket per process; a socket's posts are retried by the
    # same user's socket on the other process, at the same time.
    sockets, plans = [], []
    for name in USERS:
        posts = [(str(uuid.uuid4()), f"{name}-{i}") for i in range(PER_SOCKET)]
        for server in servers:
            ws = await Ws.connect(server.ws, token=tokens[name])
            assert (await ws.join("general"))["type"] == "joined"
            sockets.append(ws)
            plans.append(posts)
    answers = await asyncio.gather(
        *(fire(ws, plan) for ws, plan in zip(sockets, plans, strict=True))
    )

    total = len(USERS) * PER_SOCKET
    acked: dict[str, tuple[int, int]] = {}
    for acks in answers:
        for client_id, ack in acks.items():
            assert acked.setdefault(client_id, (ack["id"], ack["seq"])) == (ack["id"], ack["seq"])
    assert len(acked) == total
    rows = {
        str(cid): (pk, seq)
        async for cid, pk, seq in Message.objects.values_list("client_id", "pk", "seq")
    }
    assert rows == acked  # exactly what was acked, once each
    assert sorted(seq for _, seq in rows.values()) == list(range(1, total + 1))
    for watcher in watchers:
        assert [m["seq"] for m in await watcher.messages("general", total)] == list(
            range(1, total + 1)
        )
        assert [f for f in await watcher.quiet(0.5) if f["type"] == "message"] == []
    assert sum([await batched_posts(s) for s in servers]) > sum(before)

    late = await Ws.connect(server_b.ws, token=tokens["bob"])
    joined = await late.join("general", since=total // 2)
    assert joined["last_seq"] == total
    replayed = await late.messages("general", total - total // 2)
    assert [m["seq"] for m in replayed] == list(range(total // 2 + 1, total + 1))
    for ws in [*sockets, *watchers, late]:
        await ws.close()
