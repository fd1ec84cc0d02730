"""
The seed's load on the three-host harness (tests/hosts/harness.py): N
authenticated WebSocket clients spread over the three daphne hosts, R rooms
of N/R members, a total rate of messages for a duration, then a reconnect
storm; a bare `websockets` broadcast at the same shape in the same run.

    python bench/hosts.py                                   # `make bench-hosts`
    python bench/hosts.py --scales 10000:1000:1000:60,1500:150:150:20 --via direct,nginx

A scale is CONNECTIONS:ROOMS:MESSAGES_PER_SECOND:SECONDS (the seed's load is
10000:1000:1000:60: 10,000 connections, 1,000 rooms of 10, 1,000 messages/s in
total, so 10,000 deliveries/s, for 60 s). Each scale gets a fresh cluster.

Where the clients connect (--via): `direct`, client i to host i % 3 at its own
address (a room's members on all three hosts, so deliveries cross hosts), or
`nginx`, every client through deploy/nginx.conf on 127.0.0.1 (one worker,
4,096 worker_connections: each WebSocket takes two, so it carries about 2,000;
a scale above that is not run through it and the report says so).

Per run: connection setup rate, p50/p99/max end-to-end latency (send → each
member's receipt, the sender included), lost, duplicated and reordered
(every member must hold every acked seq of its room once, in order), server
RSS growth per connection, server CPU per delivery (the three daphnes
summed), the data host's (Redis + PostgreSQL) CPU, and the load clients' CPU:
they are --workers processes (multiprocessing), each with whole rooms; one
over 90 % of a core marks the run client-bound. Then the storm: every client
drops its socket at once, M messages per room are posted meanwhile, all
reconnect at once resuming with `since`; the time until every client holds
every seq, and what was lost. `bare` runs bench/baselines/bare.py, three
processes on 127.0.0.1 (it binds loopback only, so not in the namespaces),
at the same shape: setup rate and the broadcast (no auth, nothing stored,
no resume, so no storm).

--py-spy DIR records each daphne during the traffic phase (py-spy record,
flame graphs as SVG). Traffic goes only to 127.0.0.1 and the harness's
namespaces; every loop is bounded in count and time; everything is torn down
at the end. Needs root (network namespaces).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import multiprocessing as mp
import os
import random
import resource
import shutil
import subprocess
import sys
import time
import uuid
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadtest import (  # noqa: E402
    cpu_seconds,
    machine_cpu_seconds,
    percentiles,
    read_metrics,
)
from tests.hosts.harness import SERVER_HOSTS, Cluster, ip, unavailable  # noqa: E402
from tests.servers import free_port, wait_for_port  # noqa: E402

# Production settings for a load: no per-user rate limits (one user per
# connection, but a sender posts every second), and the harness's shortened
# fault timings back to their defaults (django_realtime/conf.py).
LOAD_ENV = {
    "CHAT_MESSAGE_RATE": "off",
    "CHAT_TYPING_RATE": "off",
    "CHAT_JOIN_RATE": "off",
    "WS_MAX_CONNECTIONS_PER_USER": "100000",
    "LOG_LEVEL": "WARNING",
    "GROUP_REFRESH_SECONDS": "30",
    "PRESENCE_TTL_SECONDS": "45",
    "PRESENCE_HEARTBEAT_SECONDS": "15",
    "PRESENCE_SWEEP_SECONDS": "5",
    "LAYER_SEND_TIMEOUT_SECONDS": "5",
    "DATABASE_STATEMENT_TIMEOUT_MS": "10000",
    "DATABASE_CONNECT_TIMEOUT_SECONDS": "5",
}
NGINX_MAX = 2000  # WebSockets deploy/nginx.conf's one worker carries (4,096 connections / 2)
FD_LIMIT = 65536
CLIENT_BOUND_PERCENT = 90


@dataclass
class Scale:
    connections: int
    rooms: int
    rate: float
    seconds: float

    @classmethod
    def parse(cls, text: str) -> Scale:
        c, r, m, s = text.split(":")
        return cls(int(c), int(r), float(m), float(s))

    def __str__(self) -> str:
        return f"{self.connections}:{self.rooms}:{self.rate:g}:{self.seconds:g}"


# --- the load client: one of --workers processes ------------------------------------


class Member:
    __slots__ = ("index", "room", "token", "url", "ws", "reader", "seqs", "done_at")

    def __init__(self, index: int, room: int, token: str, url: str):
        self.index, self.room, self.token, self.url = index, room, token, url
        self.ws: Any = None
        self.reader: asyncio.Task | None = None
        self.seqs: list[int] = []
        self.done_at = 0.0


class Worker:
    """Whole rooms' members, their senders and readers, in one process."""

    def __init__(self, kind: str, prefix: str, members: list[tuple[int, int, str, str]], conc: int):
        self.kind, self.prefix, self.conc = kind, prefix, conc
        self.members = [Member(*m) for m in members]
        self.rooms: dict[int, list[Member]] = {}
        for m in self.members:
            self.rooms.setdefault(m.room, []).append(m)
        self.acked: dict[int, list[int]] = {r: [] for r in self.rooms}
        self.sent: dict[int, int] = {r: 0 for r in self.rooms}
        self.errors: list[str] = []
        self.latencies = array("d")
        self.received = array("d")  # when each of those arrived (time.time())
        self.measuring = False
        self.targets: dict[int, int] = {}

    def slug(self, room: int) -> str:
        return f"{self.prefix}{room}"

    def url(self, m: Member) -> str:
        return m.url if self.kind == "realtime" else f"{m.url}{self.slug(m.room)}"

    async def open(self, m: Member, since: int | None, deadline: float) -> bool:
        delay = 0.2
        while True:
            try:
                headers = {"Authorization": f"Token {m.token}"}
                m.ws = await websockets.connect(
                    self.url(m),
                    additional_headers=headers,
                    open_timeout=30,
                    ping_interval=None,
                    close_timeout=2,
                    max_size=2**20,
                )
                if self.kind == "realtime":
                    frame: dict[str, Any] = {"type": "join", "room": self.slug(m.room)}
                    if since is not None:
                        frame["since"] = since
                    await m.ws.send(json.dumps(frame))
                    for _ in range(1000):  # bounded: `joined` comes first
                        raw = await asyncio.wait_for(m.ws.recv(), 30)
                        if json.loads(raw)["type"] == "joined":
                            break
                m.reader = asyncio.create_task(self.read(m))
                return True
            except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                if m.ws is not None:
                    with contextlib.suppress(Exception):
                        m.ws.transport.abort()
                if time.monotonic() + delay > deadline:
                    if len(self.errors) < 20:
                        self.errors.append(f"connect {m.index}: {exc!r}")
                    return False
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 2.0)

    async def read(self, m: Member) -> None:
        bare = self.kind == "bare"
        try:
            async for raw in m.ws:
                now = time.time()
                if bare:
                    content = raw
                    seq = int(content.split(":")[1]) + 1
                else:
                    frame = json.loads(raw)
                    kind = frame.get("type")
                    if kind == "ack":
                        self.acked[m.room].append(frame["seq"])
                        continue
                    if kind == "error":
                        if len(self.errors) < 20:
                            self.errors.append(f"error frame: {frame}")
                        continue
                    if kind != "message":
                        continue
                    seq, content = frame["seq"], frame["content"]
                m.seqs.append(seq)
                if self.measuring:
                    self.latencies.append(now - float(content.rsplit(":", 1)[1]))
                    self.received.append(now)
                if seq == self.targets.get(m.room):
                    m.done_at = now
        except websockets.ConnectionClosed:
            pass

    async def connect_all(self, since: bool = False, within: float = 300.0) -> dict:
        gate = asyncio.Semaphore(self.conc)
        deadline = time.monotonic() + within

        async def one(m: Member) -> bool:
            async with gate:
                return await self.open(
                    m, (m.seqs[-1] if m.seqs else 0) if since else None, deadline
                )

        t0 = time.time()
        done = await asyncio.gather(*(one(m) for m in self.members))
        return {"connected": sum(done), "t0": t0, "t1": time.time()}

    async def traffic(self, start_at: float, seconds: float, rate: float, drain: float) -> dict:
        """Each room's first member sends at `rate`/s from `start_at` for `seconds`."""
        await asyncio.sleep(max(0.0, start_at - time.time()))
        cpu0, wall0 = process_cpu(), time.monotonic()
        self.measuring = True
        interval = 1.0 / rate
        per_room = int(seconds * rate)
        schedule = sorted(
            (random.random() * interval + k * interval, room)
            for room in self.rooms
            for k in range(per_room)
        )
        begin = time.monotonic()
        for at, room in schedule:  # bounded: per_room × rooms sends
            delay = begin + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sender = self.rooms[room][0]
            n = self.sent[room]
            self.sent[room] += 1
            content = f"{room}:{n}:{time.time()}"
            frame = (
                content
                if self.kind == "bare"
                else json.dumps(
                    {
                        "type": "message",
                        "room": self.slug(room),
                        "content": content,
                        "client_id": str(uuid.uuid4()),
                    }
                )
            )
            with contextlib.suppress(websockets.ConnectionClosed):
                await sender.ws.send(frame)
        sent_wall = time.monotonic() - begin
        # Drain: until every member holds what its room's sender sent, or
        # nothing has moved for 5 s, or `drain` seconds.
        expected = sum(self.sent[m.room] for m in self.members)
        deadline, last, moved = time.monotonic() + drain, -1, time.monotonic()
        while time.monotonic() < deadline:
            got = sum(len(m.seqs) for m in self.members)
            if got >= expected:
                break
            if got != last:
                last, moved = got, time.monotonic()
            elif time.monotonic() - moved > 5:
                break
            await asyncio.sleep(0.2)
        self.measuring = False
        return {
            "sent": sum(self.sent.values()),
            "sent_seconds": sent_wall,
            "wall": time.monotonic() - wall0,
            "cpu": process_cpu() - cpu0,
            "latencies": self.latencies.tobytes(),
            "received": self.received.tobytes(),
            **self.check(),
        }

    def check(self) -> dict:
        """Every member against its room's seqs: lost, duplicated, reordered."""
        lost = dup = reordered = delivered = 0
        for m in self.members:
            if self.kind == "bare":
                want = set(range(1, self.sent[m.room] + 1))
            else:
                want = set(self.acked[m.room]) | set(range(1, max(self.acked[m.room] or [0]) + 1))
                want |= set(range(1, self.targets.get(m.room, 0) + 1))
            have = m.seqs
            delivered += len(have)
            unique = set(have)
            dup += len(have) - len(unique)
            lost += len(want - unique)
            reordered += sum(1 for a, b in zip(have, have[1:], strict=False) if b <= a)
        unacked = (
            0
            if self.kind == "bare"
            else sum(self.sent[r] for r in self.rooms) - sum(len(a) for a in self.acked.values())
        )
        return {
            "delivered": delivered,
            "lost": lost,
            "duplicated": dup,
            "reordered": reordered,
            "unacked": unacked,
            "errors": self.errors[:5],
        }

    async def storm_drop(self, post_url: str, poster_token: str, per_room: int) -> dict:
        """Every member's socket dropped at once (aborted: no close handshake),
        then `per_room` messages posted to each room from one other connection."""
        for m in self.members:
            with contextlib.suppress(Exception):
                m.ws.transport.abort()
        await asyncio.gather(*(m.reader for m in self.members if m.reader), return_exceptions=True)
        poster = None
        for _ in range(4):  # bounded: a swamped server may not answer at once
            try:
                poster = await websockets.connect(
                    post_url,
                    additional_headers={"Authorization": f"Token {poster_token}"},
                    open_timeout=60,
                    ping_interval=None,
                    max_size=2**20,
                )
                break
            except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                self.errors.append(f"poster: {exc!r}")
        if poster is None:
            return {"posted": 0, "failed": self.errors[-1]}
        for room in self.rooms:
            await poster.send(json.dumps({"type": "join", "room": self.slug(room)}))
            for k in range(per_room):
                await poster.send(
                    json.dumps(
                        {
                            "type": "message",
                            "room": self.slug(room),
                            "content": f"{room}:storm{k}:{time.time()}",
                            "client_id": str(uuid.uuid4()),
                        }
                    )
                )
        want, deadline = per_room * len(self.rooms), time.monotonic() + 120
        got = 0
        while got < want and time.monotonic() < deadline:
            try:
                frame = json.loads(await asyncio.wait_for(poster.recv(), 60))
            except (TimeoutError, websockets.ConnectionClosed) as exc:
                self.errors.append(f"poster: {exc!r}")
                return {"posted": got, "failed": self.errors[-1]}
            if frame.get("type") == "ack":
                got += 1
                room = int(frame["room"].removeprefix(self.prefix))
                self.targets[room] = max(self.targets.get(room, 0), frame["seq"])
                self.acked[room].append(frame["seq"])
        await poster.close()
        return {"posted": got}

    async def storm_back(self, start_at: float, limit: float) -> dict:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        cpu0 = process_cpu()
        for m in self.members:
            m.done_at = 0.0
        self.conc = len(self.members)  # all at once
        back = await self.connect_all(since=True)
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if all(m.seqs and m.seqs[-1] >= self.targets.get(m.room, 0) for m in self.members):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1)  # late duplicates, if any
        waiting = [m for m in self.members if not m.done_at]
        return {
            **back,
            "caught_up": len(self.members) - len(waiting),
            "last_done": max((m.done_at for m in self.members), default=0.0),
            "cpu": process_cpu() - cpu0,
            **self.check(),
        }

    async def close(self) -> None:
        for m in self.members:
            if m.ws is not None:
                with contextlib.suppress(Exception):
                    m.ws.transport.abort()


def process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker_main(conn: Any, kind: str, prefix: str, members: list, conc: int) -> None:
    raise_fd_limit()

    async def serve() -> None:
        worker = Worker(kind, prefix, members, conc)
        loop = asyncio.get_running_loop()
        for _ in range(20):  # bounded: one command per phase
            command, kwargs = await loop.run_in_executor(None, conn.recv)
            if command == "close":
                await worker.close()
                conn.send({})
                return
            conn.send(await getattr(worker, command)(**kwargs))

    asyncio.run(serve())


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, min(FD_LIMIT, hard if os.geteuid() else FD_LIMIT))
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))


class Workers:
    def __init__(self, kind: str, prefix: str, members: list, count: int, conc: int):
        ctx = mp.get_context("spawn")
        self.conns, self.procs = [], []
        for w in range(count):
            mine = [m for m in members if m[1] % count == w]
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=worker_main, args=(child, kind, prefix, mine, max(1, conc // count))
            )
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)

    def ask(self, command: str, timeout: float, **kwargs: Any) -> list[dict]:
        for conn in self.conns:
            conn.send((command, kwargs))
        answers = []
        deadline = time.monotonic() + timeout
        for conn, proc in zip(self.conns, self.procs, strict=True):
            if not conn.poll(max(0.1, deadline - time.monotonic())):
                raise RuntimeError(f"worker {proc.pid}: no answer to {command} in {timeout:.0f}s")
            answers.append(conn.recv())
        return answers

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.ask("close", 30)
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)


# --- the server side ------------------------------------------------------------------


def rss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


class Servers:
    """The processes a run measures: the servers, and the data side's."""

    def __init__(self, servers: list[int], data: Callable[[], list[int]] | None = None, bases=()):
        # The data side's processes are listed at each sample: PostgreSQL
        # forks a backend per connection, and the servers open theirs as they go.
        self.servers, self.data, self.bases = servers, data or list, list(bases)

    def sample(self) -> dict:
        return {
            "cpu": cpu_seconds(self.servers),
            "data_cpu": cpu_seconds(self.data()),
            "rss": rss(self.servers),
            "machine": machine_cpu_seconds(),
            "wall": time.monotonic(),
        }


METRICS = (
    "realtime_gap_fill_messages_total",
    "realtime_resume_replayed_messages_total",
    "realtime_layer_errors_total",
)


def metrics(bases: list[str]) -> dict[str, float]:
    """A few counters of the servers' /metrics, summed (nothing for bare)."""
    found: dict[str, float] = {}
    for base in bases:
        with contextlib.suppress(OSError, ValueError):
            text = read_metrics(f"{base}/metrics")
            for line in text.splitlines():
                if line.startswith(METRICS):
                    name, value = line.rsplit(" ", 1)
                    key = name.split("{", 1)[0]
                    found[key] = found.get(key, 0.0) + float(value)
    return found


def data_pids(cluster: Cluster) -> list[int]:
    out = ip("netns", "pids", cluster.data.netns, check=False).stdout.split()
    return [int(p) for p in out if p.isdigit()]


def prepare(cluster: Cluster, users: int, rooms: int, prefix: str) -> list[str]:
    """`users` users with tokens (created once, reused) and `rooms` fresh rooms."""
    code = f"""
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from chat.models import Room
have = User.objects.filter(username__startswith="load").count()
User.objects.bulk_create([User(username=f"load{{i}}") for i in range(have, {users})])
users = list(User.objects.filter(username__startswith="load").order_by("id")[:{users}])
Token.objects.bulk_create(
    [Token(user=u, key=Token.generate_key())
     for u in users if not Token.objects.filter(user=u).exists()]
)
Room.objects.bulk_create(
    [Room(slug=f"{prefix}{{r}}", name=f"{prefix}{{r}}") for r in range({rooms})]
)
keys = dict(Token.objects.filter(user__in=users).values_list("user_id", "key"))
print(" ".join(keys[u.id] for u in users))
"""
    return cluster.shell(code).strip().splitlines()[-1].split()


# --- one run --------------------------------------------------------------------------


@dataclass
class Run:
    target: str
    via: str
    scale: str
    figures: dict = field(default_factory=dict)


def phase_cpu(before: dict, after: dict) -> dict:
    wall = after["wall"] - before["wall"]
    return {
        "wall": wall,
        "server_cpu": after["cpu"] - before["cpu"],
        "data_cpu": after["data_cpu"] - before["data_cpu"],
        "machine_cpu": after["machine"] - before["machine"],
    }


def run_one(
    args: argparse.Namespace,
    *,
    target: str,
    via: str,
    scale: Scale,
    urls: list[str],
    tokens: list[str],
    prefix: str,
    servers: Servers,
    post_url: str = "",
    spy: list[int] | None = None,
) -> Run:
    run = Run(target, via, str(scale))
    kind = "bare" if target == "bare" else "realtime"  # target may name a checkout too
    f = run.figures
    per_room = scale.connections // scale.rooms
    # direct: client i to host i % 3, so a room's members are on all three;
    # bare: a room lives in one process (they share nothing), rooms spread.
    spread = (lambda i: i // per_room) if target == "bare" else (lambda i: i)
    members = [
        (i, i // per_room, tokens[i] if tokens else "-", urls[spread(i) % len(urls)])
        for i in range(scale.rooms * per_room)
    ]
    label = f"{target} via {via} at {scale}"
    log(f"--- {label}: {len(members)} clients in {args.workers} processes")
    workers = Workers(kind, prefix, members, args.workers, args.concurrency)
    try:
        time.sleep(1)
        before = servers.sample()
        answers = workers.ask("connect_all", 420)
        after = servers.sample()
        connected = sum(a["connected"] for a in answers)
        setup = max(a["t1"] for a in answers) - min(a["t0"] for a in answers)
        f["connected"] = connected
        f["setup_seconds"] = round(setup, 2)
        f["setup_per_second"] = round(connected / setup, 1) if setup else 0
        f["setup_server_cpu_ms_per_connection"] = round(
            1000 * (after["cpu"] - before["cpu"]) / max(1, connected), 2
        )
        f["rss_mb"] = round(after["rss"] / 2**20, 1)
        f["rss_kb_per_connection"] = round(
            (after["rss"] - before["rss"]) / 1024 / max(1, connected), 1
        )
        log(f"{label}: {connected} connected in {setup:.1f}s ({f['setup_per_second']}/s)")
        if connected < len(members):
            f["connect_errors"] = [e for a in answers for e in a.get("errors", [])][:5]
            log(f"{label}: only {connected} of {len(members)} connected; {f['connect_errors']}")
        time.sleep(2)
        rate_per_room = scale.rate / scale.rooms
        recorder = Recorder(
            args.py_spy, spy, f"{target}-{via}-{scale}".replace("/", "_"), scale.seconds
        )
        before = servers.sample()
        counters0 = metrics(servers.bases)
        answers = workers.ask(
            "traffic",
            scale.seconds + args.drain + 120,
            start_at=time.time() + 1,
            seconds=scale.seconds,
            rate=rate_per_room,
            drain=args.drain,
        )
        after = servers.sample()
        counters1 = metrics(servers.bases)
        f["server_counters"] = {k: v - counters0.get(k, 0.0) for k, v in counters1.items()}
        recorder.stop()
        cpu = phase_cpu(before, after)
        latencies: list[float] = []
        received: list[float] = []
        for a in answers:
            for name, into in (("latencies", latencies), ("received", received)):
                values = array("d")
                values.frombytes(a.pop(name))
                into.extend(values)
        sums = {
            k: sum(a[k] for a in answers)
            for k in ("sent", "delivered", "lost", "duplicated", "reordered", "unacked")
        }
        f.update(sums)
        f["expected"] = sums["sent"] * per_room
        f["deliveries_per_second"] = round(len(latencies) / scale.seconds, 1)
        f["sent_seconds_max"] = round(max(a["sent_seconds"] for a in answers), 2)
        f["latency_ms"] = percentiles(latencies)
        f["worst_seconds"] = worst_seconds(received, latencies)
        f["server_cpu_percent"] = round(100 * cpu["server_cpu"] / cpu["wall"], 1)
        f["server_cpu_us_per_delivery"] = (
            round(1e6 * cpu["server_cpu"] / sums["delivered"], 1) if sums["delivered"] else None
        )
        f["data_cpu_percent"] = round(100 * cpu["data_cpu"] / cpu["wall"], 1)
        clients = [round(100 * a["cpu"] / a["wall"], 1) for a in answers]
        f["client_cpu_percent"] = clients
        f["client_bound"] = max(clients) > CLIENT_BOUND_PERCENT
        f["machine_cpu_percent"] = round(100 * cpu["machine_cpu"] / cpu["wall"], 1)
        ours = cpu["server_cpu"] + cpu["data_cpu"] + sum(a["cpu"] for a in answers)
        f["other_cpu_percent"] = round(max(0.0, 100 * (cpu["machine_cpu"] - ours) / cpu["wall"]), 1)
        f["errors"] = [e for a in answers for e in a["errors"]][:5]
        log(f"{label}: traffic {json.dumps({k: v for k, v in f.items() if k != 'errors'})}")
        if kind == "realtime" and args.storm_messages > 0:
            storm(args, workers, f, tokens, post_url, servers, label, len(members))
    finally:
        workers.stop()
    return run


def worst_seconds(received: list[float], latencies: list[float], count: int = 5) -> list[dict]:
    """The seconds of the traffic phase (from its first delivery) whose
    deliveries had the highest p99: where a pause was, and how long."""
    if not received:
        return []
    start = min(received)
    by_second: dict[int, list[float]] = {}
    for at, latency in zip(received, latencies, strict=True):
        by_second.setdefault(int(at - start), []).append(latency)
    seconds = [
        {"second": second, "deliveries": len(values), **percentiles(values)}
        for second, values in by_second.items()
    ]
    seconds.sort(key=lambda s: s.get("p99", 0.0), reverse=True)
    return [
        {k: s[k] for k in ("second", "deliveries", "p50", "p99", "max")} for s in seconds[:count]
    ]


def storm(args, workers: Workers, f: dict, tokens, post_url, servers, label, clients) -> None:
    log(f"{label}: storm: every client drops, {args.storm_messages}/room posted meanwhile")
    dropped = workers.ask(
        "storm_drop", 600, post_url=post_url, poster_token=tokens[0], per_room=args.storm_messages
    )
    failed = [d["failed"] for d in dropped if d.get("failed")]
    if failed:
        f["storm"] = {"failed": f"could not post while the clients were away: {failed[0]}"}
        log(f"{label}: storm {f['storm']}")
        return
    time.sleep(1)
    before = servers.sample()
    start = time.time() + 1
    answers = workers.ask(
        "storm_back", 420 + args.storm_limit, start_at=start, limit=args.storm_limit
    )
    after = servers.sample()
    cpu = phase_cpu(before, after)
    caught = sum(a["caught_up"] for a in answers)
    last = max(a["last_done"] for a in answers)
    s = {
        "clients": clients,
        "reconnected": sum(a["connected"] for a in answers),
        "reconnect_seconds": round(max(a["t1"] for a in answers) - start, 2),
        "caught_up": caught,
        "caught_up_seconds": round(last - start, 2) if caught == clients else None,
        "lost": sum(a["lost"] for a in answers),
        "duplicated": sum(a["duplicated"] for a in answers),
        "reordered": sum(a["reordered"] for a in answers),
        "server_cpu_ms_per_client": round(1000 * cpu["server_cpu"] / clients, 2),
        "client_cpu_seconds": [round(a["cpu"], 1) for a in answers],
        "errors": [e for a in answers for e in a["errors"]][:5],
    }
    f["storm"] = s
    log(f"{label}: storm {json.dumps(s)}")


class Recorder:
    """py-spy record of each server during the traffic phase (--py-spy DIR)."""

    def __init__(self, where: str | None, pids: list[int] | None, name: str, seconds: float):
        self.procs: list[subprocess.Popen] = []
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not where or not pids or not Path(spy).exists():
            return
        Path(where).mkdir(parents=True, exist_ok=True)
        for pid in pids:
            out = Path(where) / f"{name.replace(':', 'x')}-{pid}.svg"
            self.procs.append(
                subprocess.Popen(
                    [
                        spy,
                        "record",
                        "--pid",
                        str(pid),
                        "--duration",
                        str(int(seconds)),
                        "--rate",
                        "50",
                        "--nonblocking",
                        "-o",
                        str(out),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )

    def stop(self) -> None:
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# --- the bare baseline ------------------------------------------------------------------


@contextlib.contextmanager
def bare_servers(count: int):
    ports = [free_port() for _ in range(count)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "bench/baselines/bare.py"), str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        for port in ports
    ]
    try:
        for port, proc in zip(ports, procs, strict=True):
            wait_for_port(port, timeout=30, proc=proc)
        yield [f"ws://127.0.0.1:{port}/" for port in ports], [p.pid for p in procs]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


# --- main -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scales", default="10000:1000:1000:60,1500:150:150:30")
    parser.add_argument("--via", default="direct,nginx", help="direct, nginx or both")
    parser.add_argument("--targets", default="realtime,bare")
    parser.add_argument("--workers", type=int, default=4, help="load client processes")
    parser.add_argument(
        "--concurrency", type=int, default=200, help="connects in flight, all workers"
    )
    parser.add_argument("--drain", type=float, default=30.0)
    parser.add_argument("--storm-messages", type=int, default=3)
    parser.add_argument("--storm-limit", type=float, default=60.0)
    parser.add_argument("--py-spy", default=None, help="a directory for py-spy flame graphs")
    parser.add_argument("--json", default=None, help="write every run's figures here")
    parser.add_argument(
        "--tree",
        default="",
        help="comma list of project checkouts to run the realtime servers from, each in "
        "turn (a baseline worktree beside this one); default: this one",
    )
    args = parser.parse_args()
    why = unavailable()
    if why:
        raise SystemExit(f"bench/hosts.py: {why}")
    raise_fd_limit()  # the harness's daphnes and nginx inherit it
    scales = [Scale.parse(s) for s in args.scales.split(",") if s]
    vias = args.via.split(",")
    targets = args.targets.split(",")
    runs: list[Run] = []
    trees = [Path(t).resolve() for t in args.tree.split(",")] if args.tree else [ROOT]
    for n, scale in enumerate(scales):
        for tree in trees if "realtime" in targets else []:
            log(f"=== scale {scale}: starting the cluster ({tree})")
            label = f"realtime ({tree})" if len(trees) > 1 else "realtime"
            with Cluster(env=LOAD_ENV, root=tree) as cluster:
                pids = [s.proc.pid for s in cluster.servers.values() if s.proc]
                limits = Path(f"/proc/{pids[0]}/limits").read_text()
                fd_line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
                log(f"daphne in its namespace: {' '.join(fd_line.split())}")
                servers = Servers(
                    pids,
                    functools.partial(data_pids, cluster),
                    [s.http for s in cluster.servers.values()],
                )
                for m, via in enumerate(vias):
                    if via == "nginx" and scale.connections > NGINX_MAX:
                        log(
                            f"skip nginx at {scale}: deploy/nginx.conf carries"
                            f" ~{NGINX_MAX} WebSockets"
                        )
                        runs.append(Run(label, via, str(scale), {"skipped": f"over {NGINX_MAX}"}))
                        continue
                    prefix = f"h{n}{m}r"
                    tokens = prepare(cluster, scale.connections, scale.rooms, prefix)
                    assert cluster.nginx is not None
                    urls = (
                        [cluster.servers[h].ws for h in SERVER_HOSTS]
                        if via == "direct"
                        else [cluster.nginx.ws]
                    )
                    runs.append(
                        run_one(
                            args,
                            target=label,
                            via=via,
                            scale=scale,
                            urls=urls,
                            tokens=tokens,
                            prefix=prefix,
                            servers=servers,
                            post_url=urls[0],
                            spy=pids,
                        )
                    )
        if "bare" in targets:
            with bare_servers(3) as (urls, pids):
                runs.append(
                    run_one(
                        args,
                        target="bare",
                        via="loopback",
                        scale=scale,
                        urls=urls,
                        tokens=[],
                        prefix="room",
                        servers=Servers(pids),
                    )
                )
        if args.json:
            Path(args.json).write_text(json.dumps([r.__dict__ for r in runs], indent=1))
    print(table(runs))


def table(runs: list[Run]) -> str:
    head = (
        "| target | via | scale | connected | setup /s | delivered /s | p50 ms | p99 ms | max ms "
        "| lost | dup | reord | KiB/conn | server µs/delivery | server CPU % | clients CPU % "
        "| other CPU % | storm caught up s (lost) |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in runs:
        f = r.figures
        if "skipped" in f:
            lines.append(f"| {r.target} | {r.via} | {r.scale} | skipped: {f['skipped']} |")
            continue
        lat = f.get("latency_ms", {})
        st = f.get("storm")
        storm_cell = (
            "–"
            if not st
            else st["failed"]
            if "failed" in st
            else f"{st['caught_up_seconds']} ({st['lost']})"
        )
        cells = [
            r.target,
            r.via,
            r.scale,
            f.get("connected"),
            f.get("setup_per_second"),
            f.get("deliveries_per_second"),
            lat.get("p50"),
            lat.get("p99"),
            lat.get("max"),
            f.get("lost"),
            f.get("duplicated"),
            f.get("reordered"),
            f.get("rss_kb_per_connection"),
            f.get("server_cpu_us_per_delivery"),
            f.get("server_cpu_percent"),
            f.get("client_cpu_percent"),
            f.get("other_cpu_percent"),
            storm_cell,
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
