"""
The presence leak check: WebSocket connections joining and leaving rooms on
two daphne processes that share one Redis, in a loop, then a look at what is
left behind.

    python bench/presence_churn.py                       # 200 connections, 60 s
    python bench/presence_churn.py --connections 50 --seconds 10
    python bench/presence_churn.py --redis-url redis://127.0.0.1:6390/0 \
        --database-url postgres://postgres@127.0.0.1:5439/realtime

Without URLs it starts a throwaway PostgreSQL and Redis from the local
binaries, as the test suite does. Each of the connections loops: connect to
either process, join one to three rooms, maybe go away and back, maybe type,
leave a room, then close, one in ten by dropping the TCP connection without a
close frame. Before and after, it reports Redis's key count (DBSIZE), the
presence keys, and every room's presence list as REST returns it on both
processes; after the churn all of them must be back to what they were. The
channel layer's own inbox keys expire after 60 s, so the final DBSIZE is
awaited (bounded) rather than expected at once. Exit status 1 on a leak.

Traffic stays on 127.0.0.1; connections, time and every wait are bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis.asyncio as redis
import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import PostgresServer, RedisServer, free_port, wait_for_port  # noqa: E402

PREFIX = "presence:"  # PRESENCE_REDIS_PREFIX's default, which the servers use
FRAME_TIMEOUT_SECONDS = 10.0  # one reply from a server; a stuck cycle gives up after it


@dataclass
class Tally:
    cycles: int = 0
    joins: int = 0
    aborts: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, exc: BaseException) -> None:
        name = type(exc).__name__
        self.errors[name] = self.errors.get(name, 0) + 1


class Servers:
    """PostgreSQL, Redis and two daphne processes, started and stopped together."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.owned: list = []
        self.daphnes: list[subprocess.Popen] = []
        self.ports: list[int] = []
        self.logs: list = []
        self.run = uuid.uuid4().hex[:6]  # names are unique, so given servers can be reused

    def start(self) -> Servers:
        self.redis_url = self.args.redis_url or self._own(RedisServer()).url
        self.database_url = self.args.database_url or self._own(PostgresServer()).url
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "CHAT_MESSAGE_RATE": "off",
            "CHAT_TYPING_RATE": "off",
            "CHAT_JOIN_RATE": "off",
            "WS_MAX_CONNECTIONS_PER_USER": "100000",
            "LOG_LEVEL": "WARNING",
        }
        self.env.pop("PRESENCE_REDIS_PREFIX", None)
        self._prepare_database()
        for _ in range(2):
            port = free_port()
            log = open(f"/tmp/presence-churn-{port}.log", "w")
            proc = subprocess.Popen(
                [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
                + ["project.asgi:application"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            self.daphnes.append(proc)
            self.ports.append(port)
            self.logs.append(log)
            wait_for_port(port, timeout=60, proc=proc)
        return self

    def _own(self, server):
        server.start()
        self.owned.append(server)
        return server

    def _prepare_database(self) -> None:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=self.env, check=True
        )
        a = self.args
        script = f"""
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from chat.models import Room
names = [f"churn-{self.run}-{{i}}" for i in range({a.users})]
User.objects.bulk_create([User(username=n) for n in names])
users = list(User.objects.filter(username__in=names).order_by("id"))
Token.objects.bulk_create([Token(user=u, key=Token.generate_key()) for u in users])
Room.objects.bulk_create(
    [Room(slug=f"churn-{self.run}-{{r}}", name=f"Churn {{r}}") for r in range({a.rooms})]
)
print(" ".join(Token.objects.filter(user__in=users).values_list("key", flat=True)))
"""
        out = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", script],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        )
        self.tokens = out.stdout.strip().splitlines()[-1].split()
        self.rooms = [f"churn-{self.run}-{r}" for r in range(a.rooms)]

    def stop(self) -> None:
        for proc in self.daphnes:
            proc.terminate()
        for proc in self.daphnes:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in self.logs:
            log.close()
        for server in reversed(self.owned):
            server.stop()


async def snapshot(servers: Servers, client: redis.Redis) -> dict:
    """DBSIZE, the presence keys, and each room's presence list on each process."""
    presence_keys = [k async for k in client.scan_iter(f"{PREFIX}*", count=1000)]
    lists: dict[str, list[int]] = {}
    async with httpx.AsyncClient(
        headers={"Authorization": f"Token {servers.tokens[0]}"}, timeout=10
    ) as http:
        for room in servers.rooms:
            lists[room] = []
            for port in servers.ports:
                response = await http.get(f"http://127.0.0.1:{port}/api/rooms/{room}/presence/")
                response.raise_for_status()
                lists[room].append(len(response.json()))
    return {
        "dbsize": await client.dbsize(),
        "presence_keys": len(presence_keys),
        "presence_list_lengths": lists,
    }


async def recv_until(ws, types: set[str]) -> dict:
    deadline = time.monotonic() + FRAME_TIMEOUT_SECONDS
    while True:
        left = deadline - time.monotonic()
        frame = json.loads(await asyncio.wait_for(ws.recv(), max(0.01, left)))
        if frame.get("type") in types:
            return frame


async def churn(servers: Servers, worker: int, deadline: float, tally: Tally) -> None:
    rng = random.Random(worker)
    token = servers.tokens[worker % len(servers.tokens)]
    while time.monotonic() < deadline:
        port = rng.choice(servers.ports)
        try:
            ws = await websockets.connect(
                f"ws://127.0.0.1:{port}/ws/",
                additional_headers={"Authorization": f"Token {token}"},
                open_timeout=FRAME_TIMEOUT_SECONDS,
                close_timeout=2,
            )
        except Exception as exc:  # noqa: BLE001 - counted and reported
            tally.error(exc)
            await asyncio.sleep(0.5)
            continue
        try:
            rooms = rng.sample(servers.rooms, rng.randint(1, min(3, len(servers.rooms))))
            for room in rooms:
                await ws.send(json.dumps({"type": "join", "room": room}))
                await recv_until(ws, {"joined", "error"})
                tally.joins += 1
            if rng.random() < 0.3:
                await ws.send(json.dumps({"type": "presence", "status": "away"}))
                await ws.send(json.dumps({"type": "presence", "status": "online"}))
            if rng.random() < 0.3:
                await ws.send(json.dumps({"type": "typing", "room": rooms[0], "is_typing": True}))
            await asyncio.sleep(rng.uniform(0, 0.5))
            if len(rooms) > 1:
                await ws.send(json.dumps({"type": "leave", "room": rooms[-1]}))
                await recv_until(ws, {"left"})
            await ws.send(json.dumps({"type": "ping"}))
            await recv_until(ws, {"pong"})
            tally.cycles += 1
        except Exception as exc:  # noqa: BLE001 - counted and reported
            tally.error(exc)
        finally:
            if rng.random() < 0.1:
                ws.transport.abort()  # gone without a close frame
                tally.aborts += 1
            else:
                await ws.close()


async def key_families(client: redis.Redis) -> dict[str, int]:
    """Keys counted by their first two `:`-separated parts (asgi:group, presence:conn …)."""
    families: dict[str, int] = {}
    async for key in client.scan_iter(count=1000):
        family = ":".join(key.split(":")[:2])
        families[family] = families.get(family, 0) + 1
    return families


async def settle(servers: Servers, client: redis.Redis, want: dict, seconds: float) -> dict:
    """Snapshots until one matches `want` or `seconds` pass: the last one, with
    how long presence took to match and how long everything took."""
    started = time.monotonic()
    presence_settled = None
    while True:
        now = await snapshot(servers, client)
        waited = round(time.monotonic() - started, 1)
        if presence_settled is None and all(
            now[k] == want[k] for k in ("presence_keys", "presence_list_lengths")
        ):
            presence_settled = waited
        if now == want or waited >= seconds:
            settled = now == want
            now["presence_settled_after_seconds"] = presence_settled
            now["all_settled_after_seconds"] = waited if settled else None
            return now
        await asyncio.sleep(1)


async def main(args: argparse.Namespace) -> int:
    servers = Servers(args).start()
    client = redis.Redis.from_url(servers.redis_url, decode_responses=True, socket_timeout=10)
    try:
        before = await snapshot(servers, client)
        print("before:", json.dumps(before))
        tally = Tally()
        deadline = time.monotonic() + args.seconds
        peak = {"dbsize": 0, "presence_keys": 0}

        async def sample() -> None:
            while time.monotonic() < deadline:
                peak["dbsize"] = max(peak["dbsize"], await client.dbsize())
                keys = [k async for k in client.scan_iter(f"{PREFIX}*", count=1000)]
                peak["presence_keys"] = max(peak["presence_keys"], len(keys))
                await asyncio.sleep(1)

        started = time.monotonic()
        workers = [churn(servers, i, deadline, tally) for i in range(args.connections)]
        await asyncio.wait_for(
            asyncio.gather(sample(), *workers), args.seconds + 3 * FRAME_TIMEOUT_SECONDS
        )
        elapsed = time.monotonic() - started
        print(
            f"churn: {args.connections} connections for {elapsed:.0f} s on 2 processes: "
            f"{tally.cycles} connect/join/leave/close cycles, {tally.joins} joins, "
            f"{tally.aborts} TCP aborts, errors {tally.errors or 'none'}"
        )
        print("peak during churn:", json.dumps(peak))
        print("keys right after churn:", json.dumps(await key_families(client)))
        # Presence must be back at once (disconnects are announced when they
        # happen); the layer's inbox keys expire within their 60 s.
        after = await settle(servers, client, before, args.settle_seconds)
        print("after:", json.dumps(after))
        leak = {k: (v, after[k]) for k, v in before.items() if v != after[k]}
        print("LEAK:" if leak else "no leak: every figure is back to what it was", leak or "")
        return 1 if leak else 0
    finally:
        await client.aclose()
        servers.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rooms", type=int, default=5)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument(
        "--settle-seconds", type=float, default=90, help="bound on the wait for the after figures"
    )
    parser.add_argument("--redis-url", help="use this Redis (its DBSIZE is reported as is)")
    parser.add_argument("--database-url", help="use this PostgreSQL (migrated here)")
    cli = parser.parse_args()
    cli.connections = min(cli.connections, 1000)  # bounded, whatever is asked
    cli.seconds = min(cli.seconds, 600)
    sys.exit(asyncio.run(main(cli)))
