"""
The load tool: N real WebSocket clients over R rooms, one or more senders per
room at a fixed rate, measuring what every member receives.

    python bench/loadtest.py                         # the realtime stack, defaults
    python bench/loadtest.py --target all --sweep 10,20,40,60
    python bench/loadtest.py --mode idle --clients 2000
    python bench/loadtest.py --mode storm --clients 1000
    python bench/loadtest.py --mode setup --target realtime,bare --clients 2000
    python bench/loadtest.py --mode setup --tree /tmp/before,.   # two trees, one run
    python bench/loadtest.py --server daphne,uvicorn,granian --sweep 30,60,90  # `make bench`

Targets, each started here on throwaway servers (PostgreSQL and Redis from the
local binaries, as the test suite does), the same client measuring all:
  realtime         this project: authenticated, every message stored and sequenced
  tutorial-core    the Channels tutorial chat on RedisChannelLayer, nothing stored
  tutorial-pubsub  the same on RedisPubSubChannelLayer
  bare             a bare `websockets` broadcast server (the ceiling for Python)
  socketio         a Socket.IO 4.8 chat server on Node (bench/baselines/socketio/:
                   one process, the in-memory adapter, nothing stored)
  socketio-pg      the same, storing each message in PostgreSQL (node-postgres)
                   with a per-room seq before broadcasting it
No target compresses (permessage-deflate off on both sides). The Node targets
need `npm ci --prefix bench/baselines/socketio` (`make bench` runs it); the
client speaks Socket.IO's wire protocol (Engine.IO 4 over WebSocket) itself.

Servers (--server, a comma list or all; the ASGI targets run under each in
turn, every one on fresh PostgreSQL and Redis, under the same load, and a
side-by-side table ends the run; bare and the Node targets run once):
  daphne           daphne on Twisted's asyncio reactor (what `make run` serves)
  uvicorn          uvicorn with uvloop, httptools and `websockets` (its sans-I/O
                   implementation, what `--ws auto` picks)
  granian          granian's ASGI interface (Rust HTTP and WebSocket), one worker

With two or more cores the server is pinned to core 0 and the load client,
Redis and PostgreSQL to core 1, so CPU per delivery compares between runs; a
run whose client used over 90 % of its core is marked client-bound, and one
during which processes it did not start used over 15 % of a core (a test run
beside it, say) machine-busy.
Modes: traffic (the default: senders at a rate, latency and loss), idle
(memory per idle connection), storm (every client drops, messages are posted,
all resume with `since` at once) and setup (N clients connect with a token,
join one room and wait for `joined`, as fast as --concurrency lets them: the
setup rate, and the server's CPU per connect + join).

--tree runs the ASGI targets from each of several checkouts of the project in
turn (a worktree of a baseline beside the working tree), in one run with the
same client; --py-spy FILE records the server's profile during the measured
phase (setup, storm, traffic) with py-spy, if installed.
Traffic stays on 127.0.0.1; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import PostgresServer, RedisServer, free_port, wait_for_port  # noqa: E402

TARGETS = ["realtime", "tutorial-core", "tutorial-pubsub", "bare", "socketio", "socketio-pg"]
# The targets that are no ASGI app: they run once, whatever --server names.
NOT_ASGI = {"bare", "socketio", "socketio-pg"}
SOCKETIO = {"socketio", "socketio-pg"}
SOCKETIO_DIR = ROOT / "bench/baselines/socketio"
# What the tables call the peers (the ASGI targets: target and server).
LABELS = {
    "bare": "bare",
    "socketio": "Socket.IO 4.8 (Node)",
    "socketio-pg": "Socket.IO + PostgreSQL (Node)",
}
# The bearer that reads the realtime servers' /metrics (REALTIME["METRICS_TOKEN"]):
# in the environment every server started here inherits.
METRICS_TOKEN = os.environ.setdefault("METRICS_TOKEN", "bench-metrics-token")


def read_metrics(url: str) -> str:
    """A server's Prometheus text, read with the bench's bearer token."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    return urllib.request.urlopen(request, timeout=10).read().decode()


BUSY_PERCENT = 15
SERVERS = ["daphne", "uvicorn", "granian"]
# The modules each server needs (uvicorn's and granian's: bench/requirements.txt).
SERVER_MODULES = {
    "daphne": ["daphne"],
    "uvicorn": ["uvicorn", "uvloop", "httptools"],
    "granian": ["granian", "uvloop"],
}
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- the server side -------------------------------------------------------------


def pinned(cmd: list[str], core: int | None) -> list[str]:
    return ["taskset", "-c", str(core), *cmd] if core is not None else cmd


def server_command(server: str, app: str) -> list[str]:
    """The command line serving the ASGI app `app` on 127.0.0.1:{port}."""
    if server == "uvicorn":
        return [
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--ws",
            "websockets-sansio",
            "--log-level",
            "warning",
            "--no-access-log",
        ]
    if server == "granian":
        # asginl: ASGI without the lifespan protocol, which Channels'
        # ProtocolTypeRouter does not speak.
        return [
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "asginl",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--workers",
            "1",
            "--loop",
            "uvloop",
            "--log-level",
            "warning",
            "--no-access-log",
            app,
        ]
    return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", "{port}", app]


def socketio_command(stored: bool) -> list[str]:
    """The command line of the Node Socket.IO server on 127.0.0.1:{port}, or a
    clear stop when Node or the server's packages are missing."""
    node = shutil.which("node")
    if node is None:
        raise SystemExit("--target socketio needs Node.js: `node` is not on PATH")
    if not (SOCKETIO_DIR / "node_modules/socket.io/package.json").exists():
        raise SystemExit(
            "--target socketio needs its packages: "
            "npm ci --prefix bench/baselines/socketio --no-audit --no-fund (`make bench` runs it)"
        )
    return [node, str(SOCKETIO_DIR / "server.js"), "{port}", *(["--pg"] if stored else [])]


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU seconds of these processes (all their threads)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def machine_cpu_seconds() -> float:
    """User, nice and system CPU seconds of the whole machine, all cores."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return sum(int(x) for x in fields[1:4]) / CLK_TCK


def process_tree(pid: int) -> list[int]:
    """pid and its descendants (granian serves from a worker process)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo += [int(child) for child in task.read_text().split()]
            except OSError:
                pass
    return found


class Stack:
    """The servers one target needs, started and stopped together."""

    def __init__(
        self,
        target: str,
        pin: bool,
        users: int,
        rooms: int,
        server: str = "daphne",
        processes: int = 1,
        root: Path = ROOT,
    ):
        self.target, self.users, self.rooms, self.server_kind = target, users, rooms, server
        self.root = root
        self.server_core = 0 if pin else None
        self.side_core = 1 if pin else None
        self.procs: list = []
        # Server processes behind one Redis and one database; clients are
        # spread over them round-robin.
        self.ports = [free_port() for _ in range(processes)]
        self.port = self.ports[0]
        self.servers: list[subprocess.Popen] = []
        self.logs: list = []
        self.tokens: list[str] = []

    def start(self) -> Stack:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "CHAT_MESSAGE_RATE": "off",
            "CHAT_TYPING_RATE": "off",
            "WS_MAX_CONNECTIONS_PER_USER": "100000",
            "CHAT_JOIN_RATE": "off",
            "LOG_LEVEL": "WARNING",
        }
        if self.target == "bare":
            cmd = [sys.executable, str(ROOT / "bench/baselines/bare.py"), "{port}"]
        elif self.target in SOCKETIO:
            cmd = socketio_command(stored=self.target == "socketio-pg")
            if self.target == "socketio-pg":
                # A database of its own, as the realtime target has; the
                # server creates its two tables on start.
                self.pg = PostgresServer().start()
                self.procs.append(self.pg)
                env["DATABASE_URL"] = self.pg.url
        else:
            self.redis = RedisServer()
            self.redis.start()
            self.procs.append(self.redis)
            if self.side_core is not None:
                subprocess.run(
                    ["taskset", "-pc", str(self.side_core), str(self.redis.proc.pid)],
                    capture_output=True,
                )
            env["REDIS_URL"] = self.redis.url
            if self.target == "realtime":
                self.pg = PostgresServer().start()
                self.procs.append(self.pg)
                env["DATABASE_URL"] = self.pg.url
                self._prepare_database(env)
                app = "project.asgi:application"
            else:
                env["CHANNEL_LAYER_BACKEND"] = self.target.split("-")[1]
                env["DATABASE_URL"] = "sqlite:///:memory:"
                app = "bench.baselines.tutorial:application"
            cmd = server_command(self.server_kind, app)
        for port in self.ports:
            log = open(f"/tmp/loadtest-{self.target}-{self.server_kind}-{port}.log", "w")
            self.logs.append(log)
            self.servers.append(
                subprocess.Popen(
                    pinned([arg.format(port=port) for arg in cmd], self.server_core),
                    cwd=self.root,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        for port, server in zip(self.ports, self.servers, strict=True):
            wait_for_port(port, timeout=60, proc=server)
        self.server = self.servers[0]
        return self

    def _prepare_database(self, env: dict) -> None:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v0"], cwd=self.root, env=env, check=True
        )
        script = f"""
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from chat.models import Room
User.objects.bulk_create([User(username=f"load{{i}}") for i in range({self.users})])
users = list(User.objects.order_by("id"))
Token.objects.bulk_create([Token(user=u, key=Token.generate_key()) for u in users])
Room.objects.bulk_create([Room(slug=f"room{{r}}", name=f"Room {{r}}") for r in range({self.rooms})])
print(" ".join(Token.objects.order_by("user_id").values_list("key", flat=True)))
"""
        out = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", script],
            cwd=self.root,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        self.tokens = out.stdout.strip().splitlines()[-1].split()

    def server_stats(self) -> tuple[float, int]:
        """(CPU seconds, RSS bytes) of the server processes and their children, summed."""
        cpu, rss = 0.0, 0
        for server in self.servers:
            for pid in process_tree(server.pid):
                try:
                    stat = Path(f"/proc/{pid}/stat").read_text()
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                fields = stat.rsplit(")", 1)[1].split()
                cpu += (int(fields[11]) + int(fields[12])) / CLK_TCK
                for line in status.splitlines():
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1]) * 1024
        return cpu, rss

    def own_cpu_seconds(self) -> float:
        """CPU seconds of everything this run started: this process and its
        children (server, Redis) and PostgreSQL, which pg_ctl detaches."""
        return cpu_seconds(process_tree(os.getpid()) + self._postgres_pids())

    def _postgres_pids(self) -> list[int]:
        """The PostgreSQL this run started and its backends (none without one)."""
        if getattr(self, "pg", None) is None:
            return []
        try:
            postmaster = int((self.pg.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        return process_tree(postmaster)

    def store_cpu_seconds(self) -> dict[str, float]:
        """CPU seconds so far of the Redis and PostgreSQL this run started."""
        found = {}
        redis = getattr(self, "redis", None)
        if redis is not None and getattr(redis, "proc", None) is not None:
            found["redis"] = cpu_seconds(process_tree(redis.proc.pid))
        postgres = self._postgres_pids()
        if postgres:
            found["postgres"] = cpu_seconds(postgres)
        return found

    def redis_calls(self) -> dict[str, int]:
        """Redis's count of calls so far, by command (none without Redis)."""
        if getattr(self, "redis", None) is None:
            return {}
        import redis

        stats = redis.Redis.from_url(self.redis.url).info("commandstats")
        return {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}

    def server_metrics(self) -> dict:
        """A few counters from the realtime server's /metrics (nothing for the others)."""
        found: dict = {}
        if getattr(self, "redis", None) is not None:
            found["redis_calls"] = self.redis_calls()
        if self.target != "realtime":
            return found

        wanted = (
            "realtime_gap_fill_messages_total",
            "realtime_layer_errors_total",
            "realtime_resume_replayed_messages_total",
        )
        for port in self.ports:
            text = read_metrics(f"http://127.0.0.1:{port}/metrics")
            for line in text.splitlines():
                if line.startswith(wanted):
                    name, value = line.rsplit(" ", 1)
                    found[name] = found.get(name, 0.0) + float(value)
        return found

    def stop(self) -> None:
        for server in self.servers:
            server.terminate()
        for server in self.servers:
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
        for log in self.logs:
            log.close()
        for proc in reversed(self.procs):
            proc.stop()


# --- the client side ---------------------------------------------------------------


class Protocol:
    """How one target spells joining, sending and a received message.

    The Socket.IO targets are spoken on the wire here (Engine.IO 4 over a
    WebSocket, no client library): the server opens with `0{sid, pingInterval,
    ...}`, the client connects the default namespace with `40` and is answered
    `40{sid}`; events are `42["name", data]`; the server's ping `2` is answered
    with `3` (unanswered, it drops the client after pingInterval + pingTimeout)."""

    def __init__(self, target: str, ports: list[int], rooms: int = 1):
        self.target, self.ports, self.rooms = target, ports, rooms
        self.socketio = target in SOCKETIO

    def url(self, room: int, client: int = 0) -> str:
        # Client i is in room i % rooms; a room's members alternate between
        # the server processes, so deliveries cross processes.
        port = self.ports[(client // self.rooms) % len(self.ports)]
        if self.target == "realtime":
            return f"ws://127.0.0.1:{port}/ws/"
        if self.target == "bare":
            return f"ws://127.0.0.1:{port}/room{room}"
        if self.socketio:
            return f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"
        return f"ws://127.0.0.1:{port}/ws/chat/room{room}/"

    async def open(self, ws) -> None:
        """What a target needs after the WebSocket handshake before a join:
        Socket.IO's own open and namespace connect."""
        if not self.socketio:
            return
        opened = await asyncio.wait_for(ws.recv(), 60)
        if not opened.startswith("0{"):
            raise ConnectionError(f"Socket.IO: expected the open packet, got {opened[:80]!r}")
        await ws.send("40")
        while True:
            raw = await asyncio.wait_for(ws.recv(), 60)
            if raw.startswith("40"):
                return
            if raw.startswith("44"):
                raise ConnectionError(f"Socket.IO: namespace refused: {raw[:80]!r}")
            if answer := self.reply(raw):
                await ws.send(answer)

    def join(self, room: int, since: int | None = None) -> str | None:
        if self.socketio:
            return self.event("join", f"room{room}")
        if self.target != "realtime":
            return None
        frame = {"type": "join", "room": f"room{room}"}
        if since is not None:
            frame["since"] = since
        return json.dumps(frame)

    def joined(self, raw: str) -> bool:
        """Whether a frame answers the join (the frames before it are skipped)."""
        if self.socketio:
            return self.event_of(raw)[0] == "joined"
        return json.loads(raw)["type"] == "joined"

    def reply(self, raw: str) -> str | None:
        """The frame a received frame must be answered with (Socket.IO's pong)."""
        return "3" if self.socketio and raw == "2" else None

    def send(self, room: int, content: str) -> str:
        if self.target == "realtime" or self.socketio:
            frame = {
                "type": "message",
                "room": f"room{room}",
                "content": content,
                "client_id": str(uuid.uuid4()),
            }
            if self.socketio:
                del frame["type"]
                return self.event("message", frame)
            return json.dumps(frame)
        if self.target == "bare":
            return content
        return json.dumps({"message": content})

    def received(self, raw: str) -> dict | None:
        """The message a frame carries ({content, seq?}), or None for other frames."""
        if self.target == "bare":
            return {"content": raw}
        if self.socketio:
            name, data = self.event_of(raw)
            return data if name == "message" else None
        frame = json.loads(raw)
        if self.target == "realtime":
            return frame if frame.get("type") == "message" else None
        return {"content": frame["message"]}

    @staticmethod
    def event(name: str, data: object) -> str:
        """A Socket.IO event packet on the default namespace."""
        return "42" + json.dumps([name, data], separators=(",", ":"))

    @staticmethod
    def event_of(raw: str) -> tuple[str | None, object]:
        """(name, data) of a Socket.IO event packet; (None, None) for any other packet."""
        if not raw.startswith("42["):
            return None, None
        name, *data = json.loads(raw[2:])
        return name, (data[0] if data else None)


@dataclass
class Result:
    target: str
    server: str
    mode: str
    clients: int
    rooms: int
    rate_per_room: float
    duration_seconds: float
    connected: int = 0
    setup_seconds: float = 0.0
    setup_rate: float = 0.0
    sent: int = 0
    expected: int = 0
    delivered: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    loss_percent: float = 0.0
    deliveries_per_second: float = 0.0
    latency_ms: dict = field(default_factory=dict)
    server_cpu_percent: float = 0.0
    server_cpu_us_per_delivery: float = 0.0
    server_rss_mb: float = 0.0
    server_rss_kb_per_connection: float = 0.0
    client_cpu_percent: float = 0.0
    client_bound: bool = False
    # CPU that processes this run did not start used meanwhile, in % of one
    # core (other work on the machine): over BUSY_PERCENT the figures are disturbed.
    other_cpu_percent: float = 0.0
    extra: dict = field(default_factory=dict)
    processes: int = 1
    tree: str = ""  # the checkout the server ran from, when --tree names several


def percentiles(samples: list[float]) -> dict:
    if not samples:
        return {}
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {
        "p50": pick(0.50),
        "p90": pick(0.90),
        "p99": pick(0.99),
        "max": round(ordered[-1] * 1000, 2),
        "mean": round(statistics.fmean(ordered) * 1000, 2),
    }


class Client:
    def __init__(self, index: int, room: int, protocol: Protocol, token: str | None):
        self.index, self.room, self.protocol, self.token = index, room, protocol, token
        self.ws = None
        self.latencies: list[float] = []
        self.seen: set[str] = set()
        self.duplicates = self.out_of_order = 0
        self.last_seq = 0
        # Without a seq (targets that store nothing), order is each sender's
        # own counter, which its content carries: "{sender}-{n}:{sent at}".
        self.last_by_sender: dict[str, int] = {}
        self.reader: asyncio.Task | None = None

    async def connect(self, since: int | None = None) -> None:
        headers = {"Authorization": f"Token {self.token}"} if self.token else {}
        self.ws = await websockets.connect(
            self.protocol.url(self.room, self.index),
            additional_headers=headers,
            open_timeout=60,
            ping_interval=None,
            max_size=2**20,
            compression=None,  # no target compresses; bare would otherwise accept it
        )
        await self.protocol.open(self.ws)
        join = self.protocol.join(self.room, since)
        if join:
            await self.ws.send(join)
            while not self.protocol.joined(raw := await asyncio.wait_for(self.ws.recv(), 60)):
                if answer := self.protocol.reply(raw):
                    await self.ws.send(answer)
        self.reader = asyncio.create_task(self.read())

    async def read(self) -> None:
        try:
            async for raw in self.ws:
                if answer := self.protocol.reply(raw):
                    await self.ws.send(answer)
                    continue
                message = self.protocol.received(raw)
                if message is None:
                    continue
                now = time.time()
                content = message["content"]
                if content in self.seen:
                    self.duplicates += 1
                    continue
                self.seen.add(content)
                seq = message.get("seq")
                if seq is not None:
                    if seq <= self.last_seq:
                        self.out_of_order += 1
                    self.last_seq = max(self.last_seq, seq)
                else:
                    self.count_order(content)
                self.latencies.append(now - float(content.rsplit(":", 1)[1]))
        except websockets.exceptions.ConnectionClosed:
            pass

    def count_order(self, content: str) -> None:
        sender, _, n = content.split(":", 1)[0].rpartition("-")
        if not n.isdigit():
            return
        if int(n) <= self.last_by_sender.get(sender, -1):
            self.out_of_order += 1
        self.last_by_sender[sender] = max(int(n), self.last_by_sender.get(sender, -1))

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            await asyncio.wait([self.reader], timeout=5)


def progress(label: str, done: float, total: float, extra: str = "") -> None:
    width = 30
    filled = int(width * min(1.0, done / total)) if total else width
    sys.stderr.write(f"\r{label:<16} [{'#' * filled}{'.' * (width - filled)}] {extra:<50}")
    sys.stderr.flush()


async def connect_all(clients: list[Client], concurrency: int = 50) -> float:
    start = time.monotonic()
    gate = asyncio.Semaphore(concurrency)
    done = 0

    async def one(client: Client) -> None:
        nonlocal done
        async with gate:
            await client.connect()
        done += 1
        if done % 50 == 0 or done == len(clients):
            progress("connecting", done, len(clients), f"{done}/{len(clients)}")

    await asyncio.gather(*(one(c) for c in clients))
    sys.stderr.write("\n")
    return time.monotonic() - start


async def run_traffic(args, stack: Stack, rate: float) -> Result:
    protocol = Protocol(args.target, stack.ports, args.rooms)
    clients = [
        Client(i, i % args.rooms, protocol, stack.tokens[i] if stack.tokens else None)
        for i in range(args.clients)
    ]
    result = Result(
        args.target, args.server, "traffic", args.clients, args.rooms, rate, args.duration
    )
    result.setup_seconds = round(await connect_all(clients), 2)
    result.connected = len(clients)
    result.setup_rate = round(len(clients) / max(result.setup_seconds, 1e-9), 1)
    members = [sum(1 for c in clients if c.room == r) for r in range(args.rooms)]
    senders = [[c for c in clients if c.room == r][: args.senders] for r in range(args.rooms)]
    await asyncio.sleep(0.5)

    profiler = Profiler(args.py_spy, stack)
    cpu0, _ = stack.server_stats()
    stores0 = stack.store_cpu_seconds()
    client_cpu0, wall0 = time.process_time(), time.monotonic()
    machine0, own0 = machine_cpu_seconds(), stack.own_cpu_seconds()
    sent_per_room = [0] * args.rooms
    stop_at = time.monotonic() + args.duration

    async def sender(client: Client, per_second: float) -> None:
        interval = 1.0 / per_second
        next_at = time.monotonic() + random.random() * interval
        n = 0
        while next_at < stop_at:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            await client.ws.send(protocol.send(client.room, f"{client.index}-{n}:{time.time()}"))
            n += 1
            sent_per_room[client.room] += 1
            next_at += interval

    async def report() -> None:
        while time.monotonic() < stop_at:
            await asyncio.sleep(1)
            delivered = sum(len(c.latencies) for c in clients)
            progress(
                f"{args.target} {rate:g}/s",
                args.duration - (stop_at - time.monotonic()),
                args.duration,
                f"sent {sum(sent_per_room)} delivered {delivered}",
            )

    per_sender = rate / args.senders
    await asyncio.gather(report(), *(sender(c, per_sender) for room in senders for c in room))
    # Every message is owed to every member of its room, its sender included.
    expected = sum(n * members[room] for room, n in enumerate(sent_per_room))
    sent = sum(sent_per_room)
    deadline = time.monotonic() + args.drain
    last, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        delivered = sum(len(c.latencies) for c in clients)
        if delivered >= expected:
            break
        if delivered != last:
            last, last_change = delivered, time.monotonic()
        elif time.monotonic() - last_change > 3:
            break
        await asyncio.sleep(0.2)
    sys.stderr.write("\n")
    cpu1, rss = stack.server_stats()
    profiler.stop()
    client_cpu = time.process_time() - client_cpu0
    wall = time.monotonic() - wall0
    other = machine_cpu_seconds() - machine0 - (stack.own_cpu_seconds() - own0)
    latencies = [x for c in clients for x in c.latencies]
    result.sent = sent
    result.expected = expected
    result.delivered = len(latencies)
    result.duplicates = sum(c.duplicates for c in clients)
    result.out_of_order = sum(c.out_of_order for c in clients)
    result.loss_percent = round(100 * (1 - result.delivered / expected), 3) if expected else 0.0
    result.deliveries_per_second = round(result.delivered / args.duration, 1)
    result.latency_ms = percentiles(latencies)
    server_cpu = cpu1 - cpu0
    result.server_cpu_percent = round(100 * server_cpu / wall, 1)
    result.server_cpu_us_per_delivery = (
        round(1e6 * server_cpu / result.delivered, 1) if result.delivered else 0.0
    )
    result.server_rss_mb = round(rss / 2**20, 1)
    result.client_cpu_percent = round(100 * client_cpu / wall, 1)
    result.client_bound = result.client_cpu_percent > 90
    result.other_cpu_percent = round(max(0.0, 100 * other / wall), 1)
    result.extra = stack.server_metrics()
    for name, seconds in stack.store_cpu_seconds().items():
        if result.delivered:
            used = seconds - stores0.get(name, 0.0)
            result.extra[f"{name}_cpu_us_per_delivery"] = round(1e6 * used / result.delivered, 1)
    await asyncio.gather(*(c.close() for c in clients))
    return result


async def run_idle(args, stack: Stack) -> Result:
    """Memory per idle, authenticated, joined connection."""
    protocol = Protocol(args.target, stack.ports, args.rooms)
    clients = [
        Client(i, i % args.rooms, protocol, stack.tokens[i] if stack.tokens else None)
        for i in range(args.clients)
    ]
    result = Result(args.target, args.server, "idle", args.clients, args.rooms, 0, args.duration)
    await asyncio.sleep(1)
    _, rss0 = stack.server_stats()
    result.setup_seconds = round(await connect_all(clients), 2)
    result.connected = len(clients)
    result.setup_rate = round(len(clients) / max(result.setup_seconds, 1e-9), 1)
    await asyncio.sleep(max(2.0, args.duration))
    cpu0, _ = stack.server_stats()
    await asyncio.sleep(2)
    cpu1, rss1 = stack.server_stats()
    result.server_rss_mb = round(rss1 / 2**20, 1)
    result.server_rss_kb_per_connection = round((rss1 - rss0) / 1024 / len(clients), 1)
    result.server_cpu_percent = round(100 * (cpu1 - cpu0) / 2, 1)
    result.extra = {"rss_before_mb": round(rss0 / 2**20, 1)}
    await asyncio.gather(*(c.close() for c in clients))
    return result


async def run_storm(args, stack: Stack) -> Result:
    """A reconnect storm: every client drops, M messages are posted meanwhile,
    then all reconnect at once with `since`; time until all have all of them."""
    if args.target != "realtime":
        raise SystemExit("--mode storm needs --target realtime (resume is a realtime feature)")
    protocol = Protocol(args.target, stack.ports, args.rooms)
    clients = [Client(i, i % args.rooms, protocol, stack.tokens[i]) for i in range(args.clients)]
    result = Result(args.target, args.server, "storm", args.clients, args.rooms, 0, 0)
    await connect_all(clients)
    await asyncio.gather(*(c.close() for c in clients))
    poster = Client(0, 0, protocol, stack.tokens[0])
    poster.ws = await websockets.connect(
        protocol.url(0),
        additional_headers={"Authorization": f"Token {stack.tokens[0]}"},
        ping_interval=None,
        compression=None,
    )
    per_room = args.storm_messages
    for room in range(args.rooms):
        for n in range(per_room):
            await poster.ws.send(protocol.send(room, f"storm-{room}-{n}:{time.time()}"))
    acks = 0
    while acks < per_room * args.rooms:
        acks += json.loads(await asyncio.wait_for(poster.ws.recv(), 30))["type"] == "ack"
    await poster.ws.close()
    for c in clients:
        c.latencies, c.seen = [], set()
    cpu0, _ = stack.server_stats()
    client_cpu0 = time.process_time()
    machine0, own0 = machine_cpu_seconds(), stack.own_cpu_seconds()
    profiler = Profiler(args.py_spy, stack)
    start = time.monotonic()
    gate = asyncio.Semaphore(args.clients)

    async def back(client: Client) -> None:
        async with gate:
            await client.connect(since=0)

    await asyncio.gather(*(back(c) for c in clients))
    deadline = start + 60
    while time.monotonic() < deadline:
        if all(len(c.latencies) >= per_room for c in clients):
            break
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - start
    profiler.stop()
    cpu1, _ = stack.server_stats()
    other = machine_cpu_seconds() - machine0 - (stack.own_cpu_seconds() - own0)
    result.other_cpu_percent = round(max(0.0, 100 * other / elapsed), 1)
    result.server_cpu_percent = round(100 * (cpu1 - cpu0) / elapsed, 1)
    result.client_cpu_percent = round(100 * (time.process_time() - client_cpu0) / elapsed, 1)
    result.client_bound = result.client_cpu_percent > 90
    got = sum(min(len(c.latencies), per_room) for c in clients)
    result.connected = len(clients)
    result.expected = per_room * len(clients)
    result.delivered = got
    result.duplicates = sum(c.duplicates for c in clients)
    result.loss_percent = round(100 * (1 - got / result.expected), 3)
    result.extra = {
        "recovered_seconds": round(elapsed, 2),
        "messages_per_room": per_room,
        "server_cpu_ms_per_client": round(1000 * (cpu1 - cpu0) / len(clients), 3),
    }
    _, rss = stack.server_stats()
    result.server_rss_mb = round(rss / 2**20, 1)
    await asyncio.gather(*(c.close() for c in clients))
    return result


class Profiler:
    """py-spy recording the server processes while a phase runs (--py-spy)."""

    def __init__(self, path: str, stack: Stack):
        self.procs: list[subprocess.Popen] = []
        if not path:
            return
        import shutil

        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(spy).exists():
            print("py-spy is not installed: no profile", file=sys.stderr)
            return
        for n, server in enumerate(stack.servers):
            out = path if len(stack.servers) == 1 else f"{path}.{n}"
            fmt = (
                "speedscope"
                if out.endswith(".json")
                else ("raw" if out.endswith(".txt") else "flamegraph")
            )
            self.procs.append(
                subprocess.Popen(
                    [
                        spy,
                        "record",
                        "--pid",
                        str(server.pid),
                        "--subprocesses",
                        "--nonblocking",
                        "--gil",  # CPU in Python: the thread holding the GIL
                        "--rate",
                        "200",
                        "--format",
                        fmt,
                        "-o",
                        out,
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        time.sleep(1.0)  # attached before the phase starts

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(2)  # SIGINT: py-spy writes its file and exits
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


async def quiet(stack: Stack, *, timeout: float = 60.0) -> None:
    """Wait until the servers use under 5 % of a core over half a second."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before, _ = stack.server_stats()
        await asyncio.sleep(0.5)
        after, _ = stack.server_stats()
        if after - before < 0.025:
            return


async def run_setup(args, stack: Stack) -> Result:
    """Connection setup as fast as it goes: N clients connect (with a token
    for the realtime target), join one room and wait for `joined`, at most
    --concurrency at a time. The rate is clients / wall time from the first
    connect to the last `joined`; the server CPU is what it used meanwhile."""
    protocol = Protocol(args.target, stack.ports, args.rooms)
    clients = [
        Client(i, i % args.rooms, protocol, stack.tokens[i] if stack.tokens else None)
        for i in range(args.clients)
    ]
    result = Result(args.target, args.server, "setup", args.clients, args.rooms, 0, 0)
    if args.warm:
        # Reconnects: every client has connected and joined once before.
        await connect_all(clients, concurrency=args.concurrency)
        await asyncio.gather(*(c.close() for c in clients))
        for c in clients:
            c.ws = c.reader = None
        await quiet(stack)  # the server's disconnects done before the measured phase
    await asyncio.sleep(1)
    profiler = Profiler(args.py_spy, stack)
    calls0 = stack.redis_calls()
    cpu0, rss0 = stack.server_stats()
    client_cpu0 = time.process_time()
    machine0, own0 = machine_cpu_seconds(), stack.own_cpu_seconds()
    try:
        elapsed = await asyncio.wait_for(
            connect_all(clients, concurrency=args.concurrency), timeout=600
        )
    finally:
        profiler.stop()
    cpu1, rss1 = stack.server_stats()
    calls = {k: v - calls0.get(k, 0) for k, v in stack.redis_calls().items()}
    other = machine_cpu_seconds() - machine0 - (stack.own_cpu_seconds() - own0)
    result.connected = sum(1 for c in clients if c.ws is not None)
    result.setup_seconds = round(elapsed, 2)
    result.setup_rate = round(result.connected / max(elapsed, 1e-9), 1)
    result.duration_seconds = result.setup_seconds
    server_cpu = cpu1 - cpu0
    result.server_cpu_percent = round(100 * server_cpu / elapsed, 1)
    result.client_cpu_percent = round(100 * (time.process_time() - client_cpu0) / elapsed, 1)
    result.client_bound = result.client_cpu_percent > 90
    result.other_cpu_percent = round(max(0.0, 100 * other / elapsed), 1)
    result.server_rss_mb = round(rss1 / 2**20, 1)
    result.extra = {
        "server_cpu_ms_per_setup": round(1000 * server_cpu / max(result.connected, 1), 3),
        "concurrency": args.concurrency,
        "warm": args.warm,
        "rss_before_mb": round(rss0 / 2**20, 1),
        # Redis commands per connect + join, by command (the info call itself excluded).
        "redis_calls_per_setup": {
            k: round(v / max(result.connected, 1), 2)
            for k, v in sorted(calls.items())
            if k != "info" and v
        },
    }
    await asyncio.gather(*(c.close() for c in clients))
    return result


def plot(results: list[Result], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (make bench installs it); no plot", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    several = len({r.server for r in results if r.target not in NOT_ASGI}) > 1
    for target, server in dict.fromkeys((r.target, r.server) for r in results):
        rows = [r for r in results if (r.target, r.server) == (target, server) and r.latency_ms]
        ax.plot(
            [r.deliveries_per_second for r in rows],
            [r.latency_ms["p99"] for r in rows],
            marker="o",
            label=label(target, server) if several else LABELS.get(target, target),
        )
    ax.set_xlabel("delivered frames per second")
    ax.set_ylabel("p99 end-to-end latency (ms)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title("Latency against delivered rate (200 clients, 10 rooms of 20)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}", file=sys.stderr)


def label(target: str, server: str, tree: str = "") -> str:
    """What a run is called: the peer's name, or for the ASGI targets the
    target and the server (and the checkout, when --tree names several)."""
    if target in NOT_ASGI:
        return LABELS[target]
    return f"{target} ({server}, {tree})" if tree else f"{target} ({server})"


def busy(r: Result) -> str:
    if r.other_cpu_percent <= BUSY_PERCENT:
        return ""
    return f" MACHINE-BUSY (others used {r.other_cpu_percent:g} % of a core)"


def summary_line(r: Result) -> str:
    lat = r.latency_ms
    name = label(r.target, r.server, r.tree)
    if r.mode == "setup":
        return (
            f"{name:29} setup {r.connected} clients in {r.setup_seconds} s: "
            f"{r.setup_rate}/s, server {r.server_cpu_percent} % CPU, "
            f"{r.extra['server_cpu_ms_per_setup']} ms CPU per connect + join, "
            f"client {r.client_cpu_percent} %"
            + (" CLIENT-BOUND" if r.client_bound else "")
            + busy(r)
        )
    if r.mode == "idle":
        return (
            f"{name:29} idle {r.connected} conns: {r.server_rss_kb_per_connection} KB/conn, "
            f"RSS {r.server_rss_mb} MB, setup {r.setup_rate}/s"
        )
    if r.mode == "storm":
        return (
            f"{name:29} storm {r.connected} clients: recovered in "
            f"{r.extra['recovered_seconds']} s, loss {r.loss_percent} %, dup {r.duplicates}, "
            f"server {r.server_cpu_percent} % CPU, client {r.client_cpu_percent} %"
            + (" CLIENT-BOUND" if r.client_bound else "")
            + busy(r)
        )
    bound = " CLIENT-BOUND" if r.client_bound else ""
    return (
        f"{name:29} {r.rate_per_room:>6g}/s/room: {r.deliveries_per_second:>9,.0f} del/s "
        f"p50 {lat.get('p50')} p99 {lat.get('p99')} max {lat.get('max')} ms, "
        f"loss {r.loss_percent} %, dup {r.duplicates}, ooo {r.out_of_order}, "
        f"server {r.server_cpu_percent} % CPU {r.server_cpu_us_per_delivery} us/del, "
        + "".join(
            f"{name} {r.extra[f'{name}_cpu_us_per_delivery']} us/del, "
            for name in ("postgres", "redis")
            if f"{name}_cpu_us_per_delivery" in r.extra
        )
        + f"client {r.client_cpu_percent} %{bound}{busy(r)}"
    )


def table(results: list[Result]) -> str:
    """The runs side by side, as a Markdown table (pasted into docs/performance.md)."""

    def number(value: float | None, digits: int = 0) -> str:
        return "–" if value is None else f"{value:,.{digits}f}"

    mode = results[0].mode
    if mode == "setup":
        head = [
            "run",
            "clients",
            "seconds",
            "connect + join /s",
            "server CPU ms / join",
            "server CPU %",
            "client CPU %",
            "others' CPU %",
        ]
        rows = [
            [
                label(r.target, r.server, r.tree),
                number(r.connected),
                number(r.setup_seconds, 2),
                number(r.setup_rate),
                number(r.extra["server_cpu_ms_per_setup"], 2),
                number(r.server_cpu_percent),
                number(r.client_cpu_percent),
                number(r.other_cpu_percent),
            ]
            for r in results
        ]
    elif mode == "idle":
        head = ["run", "connections", "KB / connection", "RSS MB", "setup /s", "idle CPU %"]
        rows = [
            [
                label(r.target, r.server, r.tree),
                number(r.connected),
                number(r.server_rss_kb_per_connection, 1),
                number(r.server_rss_mb, 1),
                number(r.setup_rate),
                number(r.server_cpu_percent, 1),
            ]
            for r in results
        ]
    elif mode == "storm":
        head = [
            "run",
            "clients",
            "recovered s",
            "loss %",
            "dup",
            "server CPU %",
            "client CPU %",
            "others' CPU %",
        ]
        rows = [
            [
                label(r.target, r.server, r.tree),
                number(r.connected),
                number(r.extra["recovered_seconds"], 2),
                number(r.loss_percent, 3),
                number(r.duplicates),
                number(r.server_cpu_percent, 1),
                number(r.client_cpu_percent, 1),
                number(r.other_cpu_percent),
            ]
            for r in results
        ]
    else:
        head = [
            "run",
            "offered /s",
            "delivered /s",
            "p50 ms",
            "p99 ms",
            "loss %",
            "server CPU µs / delivery",
            "server CPU %",
            "setup (connect + join) /s",
            "RSS MB",
            "client CPU %",
            "others' CPU %",
        ]
        rows = [
            [
                label(r.target, r.server, r.tree),
                number(r.expected / r.duration_seconds),
                number(r.deliveries_per_second),
                number(r.latency_ms.get("p50"), 1),
                number(r.latency_ms.get("p99"), 1),
                number(r.loss_percent, 2),
                number(r.server_cpu_us_per_delivery, 1),
                number(r.server_cpu_percent),
                number(r.setup_rate),
                number(r.server_rss_mb),
                number(r.client_cpu_percent),
                number(r.other_cpu_percent),
            ]
            for r in results
        ]
    for r, row in zip(results, rows, strict=True):
        if r.client_bound:
            row[0] += " CLIENT-BOUND"
        if r.other_cpu_percent > BUSY_PERCENT:
            row[0] += " MACHINE-BUSY"
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    if any(r.other_cpu_percent > BUSY_PERCENT for r in results):
        lines.append(
            f"\nMACHINE-BUSY: processes this run did not start used over {BUSY_PERCENT} % "
            "of a core meanwhile; those figures are disturbed, run again on a quiet machine."
        )
    return "\n".join(lines)


def check_servers(servers: list[str], targets: list[str]) -> None:
    """Stop before starting anything if a server is unknown or not installed."""
    import importlib.util

    for target in targets:
        if target not in TARGETS:
            raise SystemExit(f"--target: {target!r} is none of {', '.join(TARGETS)}")
    if SOCKETIO & set(targets):
        socketio_command(stored=False)  # Node and its packages are there
    for server in servers:
        if server not in SERVERS:
            raise SystemExit(f"--server: {server!r} is none of {', '.join(SERVERS)}")
        if set(targets) <= NOT_ASGI:
            continue
        missing = [m for m in SERVER_MODULES[server] if importlib.util.find_spec(m) is None]
        if missing:
            raise SystemExit(
                f"--server {server} needs {', '.join(missing)}: "
                "`make bench` installs bench/requirements.txt"
            )


async def main_async(args) -> list[Result]:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    pin = args.pin and args.processes == 1 and os.cpu_count() and os.cpu_count() >= 2
    if pin:
        os.sched_setaffinity(0, {1})
    targets = TARGETS if args.target == "all" else args.target.split(",")
    servers = SERVERS if args.server == "all" else args.server.split(",")
    check_servers(servers, targets)
    if args.processes > 1 and NOT_ASGI & set(targets):
        raise SystemExit(
            "--processes: bare and the Node targets run as one process "
            "(their rooms live in its memory)"
        )
    rates = [float(x) for x in args.sweep.split(",")] if args.sweep else [args.rate]
    results = []
    given = args.target, args.server
    # bare and the Node servers are no ASGI app: each runs once, under the first server's name.
    trees = [Path(t).resolve() for t in args.tree.split(",")] if args.tree else [ROOT]
    runs = [
        (target, server, tree)
        for target in targets
        for server in (servers[:1] if target in NOT_ASGI else servers)
        for tree in (trees[:1] if target in NOT_ASGI else trees)
    ]
    for target, server, tree in runs:
        args.target, args.server = target, server
        stack = Stack(
            target,
            bool(pin),
            users=args.clients,
            rooms=args.rooms,
            server=server,
            processes=args.processes,
            root=tree,
        ).start()
        first = len(results)
        try:
            if args.mode == "setup":
                results.append(await run_setup(args, stack))
            elif args.mode == "idle":
                results.append(await run_idle(args, stack))
            elif args.mode == "storm":
                results.append(await run_storm(args, stack))
            else:
                for rate in rates:
                    results.append(await run_traffic(args, stack, rate))
                    print(summary_line(results[-1]), flush=True)
                    if results[-1].loss_percent > 5 and args.stop_on_loss:
                        break
            for result in results:
                result.processes = args.processes
            if len(trees) > 1 and target not in NOT_ASGI:
                for result in results[first:]:
                    result.tree = str(tree)
            if args.mode != "traffic":
                print(summary_line(results[-1]), flush=True)
        finally:
            stack.stop()
    args.target, args.server = given
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--target", default="realtime", help=f"one of {', '.join(TARGETS)}, a comma list, or all"
    )
    parser.add_argument("--mode", choices=["traffic", "idle", "storm", "setup"], default="traffic")
    parser.add_argument(
        "--server",
        default="daphne",
        help=f"the ASGI server: one of {', '.join(SERVERS)}, a comma list (each in turn, "
        "side by side) or all; uvicorn and granian need `make bench`'s extras",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="server processes, clients spread over them (with more than one, nothing is pinned)",
    )
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--senders", type=int, default=1, help="senders per room")
    parser.add_argument("--rate", type=float, default=30, help="messages per second per room")
    parser.add_argument("--sweep", default="", help="comma list of rates per room")
    parser.add_argument("--duration", type=float, default=10, help="seconds of traffic per rate")
    parser.add_argument("--drain", type=float, default=10, help="seconds to wait for stragglers")
    parser.add_argument("--storm-messages", type=int, default=20, help="per room, for --mode storm")
    parser.add_argument(
        "--concurrency", type=int, default=50, help="handshakes under way at once (--mode setup)"
    )
    parser.add_argument(
        "--warm",
        action="store_true",
        help="--mode setup: measure reconnects (every client connected and joined once before)",
    )
    parser.add_argument(
        "--tree",
        default="",
        help="comma list of project checkouts to serve the ASGI targets from, each in turn "
        "(a baseline worktree beside this one); default: this one",
    )
    parser.add_argument(
        "--py-spy",
        default="",
        help="record the server with py-spy during setup/storm/traffic into FILE",
    )
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    parser.add_argument("--stop-on-loss", action="store_true")
    parser.add_argument("--json", default="", help="write the results here")
    parser.add_argument("--plot", default="", help="write a PNG of p99 against rate here")
    args = parser.parse_args()
    if args.duration > 600 or args.clients > 20000 or not 1 <= args.concurrency <= 20000:
        raise SystemExit("bounded: at most 600 s per rate, 20,000 clients and concurrency")
    results = asyncio.run(main_async(args))
    payload = {"machine": machine(), "args": vars(args), "results": [asdict(r) for r in results]}
    if args.json:
        Path(args.json).write_text(json.dumps(payload, indent=2))
    else:
        print(json.dumps(payload["results"], indent=2))
    if args.plot:
        plot(results, args.plot)
    if len(results) > 1:
        info = payload["machine"]
        versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
        load = f"{args.clients} clients in {args.rooms} rooms"
        if args.mode == "traffic":
            load += f", {args.senders} sender(s) per room, {args.duration:g} s per rate"
        else:
            load += f", --mode {args.mode}"
        pinned_run = args.pin and args.processes == 1 and (os.cpu_count() or 0) >= 2
        pinning = "server on core 0, the rest on core 1" if pinned_run else "nothing pinned"
        print(
            f"\n{load}; {info['cores']} cores ({info['cpu']}), {pinning}, "
            f"Python {info['python']}; {versions}\n"
        )
        print(table(results), flush=True)


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    from importlib import metadata

    versions = {}
    for name in ["daphne", "uvicorn", "granian", "uvloop", "websockets", "channels"]:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    try:
        socketio = json.loads((SOCKETIO_DIR / "node_modules/socket.io/package.json").read_text())
        versions["socket.io"] = socketio["version"]
        versions["node"] = subprocess.run(
            ["node", "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, ValueError, KeyError, subprocess.SubprocessError):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "versions": versions,
    }


if __name__ == "__main__":
    main()
