"""
The live-data load: one topic, many subscribers, a publisher at a fixed rate
over a few keys, and some subscribers that stop reading for a while in the
middle, then read again (docs/topics.md).

    python bench/topics.py                                  # the issue's scale, both targets
    python bench/topics.py --subscribers 200 --rate 20      # a scale both targets carry here
    python bench/topics.py --scales 2000x200x50,200x20x50,100x20x20x20000  # `make bench-topics`
    python bench/topics.py --target realtime --duration 20 --stall-seconds 6
    python bench/topics.py --target realtime,realtime:TOPICS_HAND_OUT_SHARE=1  # a setting's effect
    python bench/topics.py --target realtime@/tmp/before,realtime   # a baseline worktree, one run

Targets, each on throwaway servers (bench/loadtest.py's Stack: PostgreSQL and
Redis from the local binaries), 2 daphne processes by default (--processes),
subscribers spread over them round-robin:
  realtime  this project (project.asgi, the production command line, REDIS_URL
            set): `subscribe` on /ws/ with a token; the publisher is another
            process calling django_realtime.topics.apublish() with the
            servers' settings (Redis history, then the layer's doorbell).
  plain     bench/plain_topic_consumer.py: an AsyncJsonWebsocketConsumer in a
            group, channels_redis' RedisChannelLayer as shipped, daphne
            unadjusted; the publisher is another process calling group_send.
  bare      bench/baselines/bare_topic.py: a bare `websockets` server per
            process reading publications from one Redis pub/sub channel and
            handing them out in rounds, as the project's hub does (nothing
            authenticated, stored, sequenced or bounded): the floor for
            Python at the same shape, on the same machine.

Every publication carries {"n", "t": time.time()} (and --pad characters of
padding) and goes out with key k{n % keys}. A scale is
SUBSCRIBERSxRATE[xSTALLED[xPAD]]. A stalled reader's output first fills the
kernel's socket buffers (up to tcp_wmem's 4 MB on the server's side): only
what does not fit reaches the server process, so the last scale of `make
bench-topics` pads publications to 20 kB, 8 MB per stalled reader in 20 s;
the kernel-held column says how much the kernel took.

The readers that keep reading run in Node processes (--node-readers, 2 by
default: bench/topics_readers.mjs), with "batch": true for the realtime
target unless --no-batch, so that the client is not what limits a server
sending tens of thousands of frames a second; the stalled readers stay here
(their small receive buffers need a socket option Node does not offer).
--node-readers 0 keeps every reader in this process, one frame at a time.

A reader whose connection closes (the server's bound on a stalled reader's
output, daphne's ping timeout on one that did not answer for 30 s)
reconnects and subscribes again with `since` and `epoch` from the last
publication it read, as client.js does; the closes are counted.

Figures: publish-to-receive latency of the readers that kept reading;
publications each reader never got (the project's server conflates by key
for a reader, or a process, that is behind; channels_redis drops the oldest
event of a consumer whose queue holds `capacity` (100), and group_send skips
a full channel); whether each reader, resumed ones included, ends with the
latest value of every key; how long a resumed reader takes to see data
published after it resumed; the servers' RSS every second (before, during
and after the stall); deliveries per second; server CPU (the processes summed: 200 % is two cores).

With one server process and two or more cores, the server is pinned to
core 0 and everything else to core 1 (as bench/loadtest.py does); with two
server processes nothing is pinned. A client process over 90 % of a core is
marked CLIENT-BOUND: its figures are the client's as much as the server's.
Traffic stays on 127.0.0.1; every phase is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import loadtest  # noqa: E402
from bench.loadtest import (  # noqa: E402
    BUSY_PERCENT,
    Stack,
    connect_all,
    cpu_seconds,
    machine,
    machine_cpu_seconds,
    percentiles,
    progress,
)

TOPIC = "public:bench"
NODE_READERS = ROOT / "bench" / "topics_readers.mjs"
NODE_BINS_PER_MS = 10  # its latency histogram's bins
TARGETS = ["realtime", "plain", "bare"]
PLAIN_APP = "bench.plain_topic_consumer:application"
BARE_SERVER = [sys.executable, str(ROOT / "bench/baselines/bare_topic.py"), "{port}"]
# A stalled reader: the kernel's receive buffer kept small (set before the
# SYN) and the library's queue at one frame, so that not reading really
# leaves the output with the server (as tests/live/test_slow_readers_live.py).
STALLED_RCVBUF = 16 * 1024
REALTIME_COUNTERS = (
    "realtime_topic_publications_total",
    "realtime_topic_conflated_total",
    "realtime_output_overflows_total",
    "realtime_frames_out_total",
)


# --- the publisher (a process of its own) -------------------------------------------


async def publish_loop(args) -> dict:
    """Publish args.rate per second for args.duration from args.start_at;
    what was published, the latest publication of each key included."""
    import django

    django.setup()
    if args.publisher == "realtime":
        from django_realtime.topics import apublish

        async def send(n: int, key: str, data: dict) -> int:
            return await apublish(TOPIC, data, key=key)

    elif args.publisher == "bare":
        import redis.asyncio as redis

        from bench.baselines.bare_topic import CHANNEL

        client = redis.Redis.from_url(os.environ["REDIS_URL"])

        async def send(n: int, key: str, data: dict) -> int:
            await client.publish(CHANNEL, json.dumps({"offset": n, "key": key, "data": data}))
            return n  # the bare server's offsets are the publisher's

    else:
        from channels.layers import get_channel_layer

        from bench.plain_topic_consumer import event, group_name

        layer = get_channel_layer()
        group = group_name(TOPIC)

        async def send(n: int, key: str, data: dict) -> int:
            await layer.group_send(group, event(TOPIC, n, key, data))
            return n  # the plain consumer's offsets are the publisher's

    pad = "x" * args.pad
    total = int(args.rate * args.duration)
    interval = 1.0 / args.rate
    await asyncio.sleep(max(0.0, args.start_at - time.time()))
    cpu0 = time.process_time()
    start = time.monotonic()
    give_up = start + args.duration * 2 + 10
    last: dict[str, list[int]] = {}  # key -> [offset, n]
    offsets: list[int] = []
    errors, behind = 0, 0.0
    for n in range(1, total + 1):
        delay = start + (n - 1) * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            behind = max(behind, -delay)
        if time.monotonic() > give_up:
            break
        key = f"k{n % args.keys}"
        data: dict = {"n": n, "t": time.time()}
        if pad:
            data["pad"] = pad
        try:
            offset = await send(n, key, data)
        except Exception as exc:  # noqa: BLE001 - counted, the next one goes on
            errors += 1
            print(f"publish {n} failed: {exc!r}", file=sys.stderr)
            continue
        offsets.append(offset)
        if key not in last or offset > last[key][0]:
            last[key] = [offset, n]
    elapsed = time.monotonic() - start
    return {
        "published": len(offsets),
        "errors": errors,
        "seconds": round(elapsed, 3),
        "max_behind_seconds": round(behind, 3),
        "offsets": [min(offsets), max(offsets)] if offsets else [0, 0],
        "contiguous": offsets == list(range(offsets[0], offsets[0] + len(offsets)))
        if offsets
        else True,
        "last": last,
        "cpu_seconds": round(time.process_time() - cpu0, 2),  # publishing
        "cpu_total_seconds": round(time.process_time(), 2),  # its setup included
    }


# --- the subscribers -------------------------------------------------------------------


class Reader:
    """One subscriber: what it received, by offset and key, and when."""

    def __init__(self, index: int, port: int, token: str | None):
        self.index, self.port, self.token = index, port, token
        self.stall: tuple[float, float] | None = None  # wall-clock window without reading
        self.stalls = False  # set before connecting: the small buffers
        self.batch = False  # "batch": true
        self.ws = None
        self.task: asyncio.Task | None = None
        self.offsets: set[int] = set()
        self.received: list[float] = []  # receive times
        self.latencies: list[float] = []  # seconds, same order
        self.last: dict[str, tuple[int, int]] = {}  # key -> (offset, n)
        self.duplicates = self.out_of_order = 0
        self.max_offset = 0
        self.paused_at = self.resumed_at = self.fresh_at = None
        self.close_code: int | None = None
        self.closes: list[int] = []  # every close the reader saw, before it reconnected
        self.epoch: str | None = None
        self.running = True  # reconnect on a close while the run lasts, as a client does
        self.anomalies: list[list] = []  # the first few: [kind, offset, highest before]

    async def connect(self, since: int | None = None) -> None:
        url = f"ws://127.0.0.1:{self.port}/ws/"
        options: dict = {
            "additional_headers": {"Authorization": f"Token {self.token}"} if self.token else {},
            "open_timeout": 60,
            "ping_interval": None,  # its keepalive would give up on a busy server
            "max_size": 2**20,
            "proxy": None,
        }
        if self.stalls:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STALLED_RCVBUF)
            sock.connect(("127.0.0.1", self.port))
            options.update(sock=sock, max_queue=1)
        self.ws = await websockets.connect(url, **options)
        subscribe: dict = {"type": "subscribe", "topic": TOPIC}
        if self.batch:
            subscribe["batch"] = True
        if since is not None and self.epoch is not None:
            subscribe.update(since=since, epoch=self.epoch)  # resume, as client.js does
        await self.ws.send(json.dumps(subscribe))
        while True:
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), 60))
            if frame.get("type") == "subscribed":
                self.epoch = frame.get("epoch")
                break
            if frame.get("type") == "error":
                raise RuntimeError(f"subscribe refused: {frame}")
        if self.task is None:
            self.task = asyncio.create_task(self.read())

    async def _next(self) -> str | None:
        """The next frame, or None once the stall is over (it stopped reading meanwhile)."""
        if self.stall is None or self.resumed_at is not None:
            return await self.ws.recv()
        start, end = self.stall
        wait = start - time.time()
        if wait > 0:
            try:
                return await asyncio.wait_for(self.ws.recv(), wait)  # recv is cancel-safe
            except TimeoutError:
                return None
        self.paused_at = time.time()
        await asyncio.sleep(max(0.0, end - time.time()))
        self.resumed_at = time.time()
        return None

    async def read(self) -> None:
        """Read until the end of the run; on a close, reconnect and resume
        from the last offset read (at most 5 times), as a client does."""
        while True:
            await self._read_one_connection()
            if not self.running or len(self.closes) > 5:
                return
            self.stalls = False  # the new connection reads
            try:
                await self.connect(since=self.max_offset)
            except Exception:  # noqa: BLE001 - counted: the reader stays closed
                return
            self.close_code = None

    async def _read_one_connection(self) -> None:
        try:
            while True:
                raw = await self._next()
                if raw is None:
                    continue
                now = time.time()
                frame = json.loads(raw)
                if frame.get("type") == "publication":
                    self.take(frame, now)
                elif frame.get("type") == "publications":
                    for entry in frame["publications"]:
                        self.take(entry, now)
        except websockets.exceptions.ConnectionClosed as closed:
            self.close_code = closed.rcvd.code if closed.rcvd else 1006
            self.closes.append(self.close_code)

    def take(self, entry: dict, now: float) -> None:
        """One publication (a `publication` frame, or an entry of a batch)."""
        offset = entry["offset"]
        if offset in self.offsets:
            self.duplicates += 1
            if len(self.anomalies) < 3:
                self.anomalies.append(["dup", offset, self.max_offset])
            return
        if offset < self.max_offset:
            self.out_of_order += 1
            if len(self.anomalies) < 3:
                self.anomalies.append(["ooo", offset, self.max_offset])
        self.max_offset = max(self.max_offset, offset)
        self.offsets.add(offset)
        data = entry["data"]
        self.received.append(now)
        self.latencies.append(now - data["t"])
        key = entry.get("key")
        if key is not None:
            held = self.last.get(key)
            if held is None or offset > held[0]:
                self.last[key] = (offset, data["n"])
        if self.resumed_at is not None and self.fresh_at is None:
            if data["t"] >= self.resumed_at:
                self.fresh_at = now

    async def close(self) -> None:
        self.running = False
        if self.task is not None:
            self.task.cancel()
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 5)


class NodeReaders:
    """The readers that keep reading, in Node processes
    (bench/topics_readers.mjs): what they report, merged."""

    def __init__(self, readers: list[tuple[int, int, str | None]], processes: int, batch: bool):
        self.groups = [readers[i::processes] for i in range(processes) if readers[i::processes]]
        self.batch = batch
        self.procs: list[asyncio.subprocess.Process] = []
        self.ticks: dict[int, dict] = {}
        self.summaries: list[dict] = []
        self.followers: list[asyncio.Task] = []

    def __len__(self) -> int:
        return sum(len(group) for group in self.groups)

    async def start(self) -> None:
        node = shutil.which("node")
        if node is None:
            raise SystemExit("bench/topics.py needs Node for its readers (or --node-readers 0)")
        for group in self.groups:
            proc = await asyncio.create_subprocess_exec(
                node,
                str(NODE_READERS),
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                limit=2**27,
            )
            settings = {
                "readers": [
                    {"index": i, "url": f"ws://127.0.0.1:{port}/ws/", "token": token}
                    for i, port, token in group
                ],
                "topic": TOPIC,
                "batch": self.batch,
                "maxCloses": 5,
            }
            self._tell(proc, json.dumps(settings))
            self.procs.append(proc)
        for proc in self.procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 900)
            if not line or "connected" not in json.loads(line):
                raise RuntimeError(f"the Node readers did not connect: {line!r}")
        self.followers = [
            asyncio.create_task(self._follow(n, proc)) for n, proc in enumerate(self.procs)
        ]

    @staticmethod
    def _tell(proc: asyncio.subprocess.Process, line: str) -> None:
        assert proc.stdin is not None
        proc.stdin.write(line.encode() + b"\n")

    async def _follow(self, n: int, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            message = json.loads(line)
            if "tick" in message:
                self.ticks[n] = message
            elif "summary" in message:
                self.summaries.append(message["summary"])
                return

    def stall(self, start: float, end: float) -> None:
        for proc in self.procs:
            self._tell(proc, f"stall {start!r} {end!r}")

    def delivered(self) -> int:
        return sum(tick["delivered"] for tick in self.ticks.values())

    def min_offset(self) -> int:
        if len(self.ticks) < len(self.procs):
            return 0
        return min(tick["minOffset"] for tick in self.ticks.values())

    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs]

    async def finish(self, first: int, final: int) -> None:
        for proc in self.procs:
            self._tell(proc, f"finish {first} {final}")
        await asyncio.wait_for(asyncio.gather(*self.followers), 120)
        for proc in self.procs:
            await asyncio.wait_for(proc.wait(), 30)

    def readers(self) -> list[dict]:
        return [reader for summary in self.summaries for reader in summary["readers"]]

    def latency_ms(self, which: str = "latency") -> dict:
        """The merged histograms' percentiles, as loadtest.percentiles gives them."""
        bins: Counter[int] = Counter()
        count, top, total = 0, 0.0, 0.0
        for summary in self.summaries:
            histogram = summary[which]
            bins.update({int(b): c for b, c in histogram["bins"].items()})
            count += histogram["count"]
            top, total = max(top, histogram["max"]), total + histogram["sum"]
        if not count:
            return {}
        ordered = sorted(bins.items())

        def pick(q: float) -> float:
            rank, seen = min(count - 1, int(q * count)), 0
            for b, c in ordered:
                seen += c
                if seen > rank:
                    return round(min(top, (b + 0.5) / NODE_BINS_PER_MS), 2)
            return round(top, 2)

        return {
            "p50": pick(0.50),
            "p90": pick(0.90),
            "p99": pick(0.99),
            "max": round(top, 2),
            "mean": round(total / count, 2),
        }


# --- one run ----------------------------------------------------------------------------


@dataclass
class Run:
    target: str
    subscribers: int
    rate: float
    keys: int
    duration: float
    stalled: int
    stall_seconds: float
    processes: int
    pad: int = 0
    pinned: bool = False
    setup_seconds: float = 0.0
    published: int = 0
    publish_rate: float = 0.0
    publisher_max_behind_seconds: float = 0.0
    publish_errors: int = 0
    offered_per_second: float = 0.0
    delivered: int = 0
    deliveries_per_second: float = 0.0
    latency_ms: dict = field(default_factory=dict)  # the readers that kept reading
    latency_during_stall_ms: dict = field(default_factory=dict)
    readers_missed_percent: float = 0.0  # mean share of publications a reader never got
    readers_missed_max: int = 0
    readers_latest: int = 0  # of the readers that kept reading: latest value of every key
    readers: int = 0
    resumed_latest: int = 0  # of the resumed readers: latest value of every key
    resumed_missed_mean: float = 0.0
    resumed_missed_max: int = 0
    resumed_fresh_seconds: dict = field(default_factory=dict)  # resume -> first fresh frame
    duplicates: int = 0
    out_of_order: int = 0
    closed_by_server: dict = field(default_factory=dict)
    # What the kernel held for each stalled reader just before it resumed
    # (the server's send buffer and the client's receive buffer), mean KB.
    kernel_held_kb: float | None = None
    rss_mb: dict = field(default_factory=dict)  # before, during max, end of stall, after
    rss_series_mb: list = field(default_factory=list)  # one a second, from the first publication
    server_cpu_percent: float = 0.0
    server_cpu_us_per_delivery: float = 0.0
    redis_cpu_percent: float = 0.0
    publisher_cpu_percent: float = 0.0
    client_cpu_percent: float = 0.0
    client_bound: bool = False
    other_cpu_percent: float = 0.0
    extra: dict = field(default_factory=dict)


@contextlib.contextmanager
def serving(app: str | list[str]):
    """Stack serves the tutorial app for its non-realtime targets: have it
    serve `app` instead while it starts (the command line is otherwise
    loadtest's), or run `app` if it is a whole command line."""
    original = loadtest.server_command
    if isinstance(app, list):
        loadtest.server_command = lambda server, _app: app
    else:
        loadtest.server_command = lambda server, _app: original(server, app)
    try:
        yield
    finally:
        loadtest.server_command = original


def start_stack(target: str, args, pin: bool, root: Path = loadtest.ROOT) -> Stack:
    if target == "realtime":
        return Stack(
            "realtime", pin, users=args.subscribers, rooms=0, processes=args.processes, root=root
        ).start()
    # tutorial-core: channels_redis' RedisChannelLayer as shipped, no database
    # (bare: only the Redis it starts).
    stack = Stack("tutorial-core", pin, users=0, rooms=0, processes=args.processes)
    with serving(BARE_SERVER if target == "bare" else PLAIN_APP):
        return stack.start()


def publisher_env(target: str, stack: Stack) -> dict:
    """The servers' settings (what Stack.start gives them), for the publisher."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "REDIS_URL": stack.redis.url,
        "LOG_LEVEL": "WARNING",
    }
    if target == "realtime":
        env["DATABASE_URL"] = stack.pg.url
    else:
        env["DATABASE_URL"] = "sqlite:///:memory:"
        env["CHANNEL_LAYER_BACKEND"] = "core"
    return env


def realtime_counters(stack: Stack) -> dict:
    found: dict = {}
    for port in stack.ports:
        try:
            text = loadtest.read_metrics(f"http://127.0.0.1:{port}/metrics")
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith(REALTIME_COUNTERS):
                name, value = line.rsplit(" ", 1)
                found[name] = found.get(name, 0.0) + float(value)
    return found


def redis_calls(stack: Stack) -> dict:
    import redis

    stats = redis.Redis.from_url(stack.redis.url).info("commandstats")
    return {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items() if v["calls"] > 100}


def tcp_queues() -> dict[tuple[int, int], tuple[int, int]]:
    """(local port, remote port) -> (bytes sent but not taken, bytes received
    but not read) of every TCP socket on 127.0.0.1 (/proc/net/tcp)."""
    found = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, queues = fields[1], fields[2], fields[4]
        if not local.startswith("0100007F:"):
            continue
        tx, rx = (int(x, 16) for x in queues.split(":"))
        found[(int(local.split(":")[1], 16), int(remote.split(":")[1], 16))] = (tx, rx)
    return found


def kernel_held(readers: list[Reader]) -> float | None:
    """Mean KB the kernel holds for these connections: the server side's send
    queue and the client side's receive queue."""
    queues = tcp_queues()
    held = []
    for r in readers:
        if r.ws is None:
            continue
        port = r.ws.transport.get_extra_info("sockname")[1]
        server_tx = queues.get((r.port, port), (0, 0))[0]
        client_rx = queues.get((port, r.port), (0, 0))[1]
        held.append(server_tx + client_rx)
    return round(statistics.fmean(held) / 1024, 1) if held else None


def stalled_indexes(subscribers: int, stalled: int, processes: int) -> set[int]:
    """Spread over the subscribers and alternating between the server processes."""
    if not stalled:
        return set()
    step = subscribers // stalled
    return {i * step + (i % processes if step > processes else 0) for i in range(stalled)}


def ms(values: list[float]) -> dict:
    return percentiles(values)


async def scenario(args, target: str, stack: Stack, pin: bool) -> Run:
    run = Run(
        target,
        args.subscribers,
        args.rate,
        args.keys,
        args.duration,
        args.stalled,
        args.stall_seconds,
        args.processes,
        pad=args.pad,
        pinned=pin,
    )
    tokens = stack.tokens or [None] * args.subscribers
    stall_set = stalled_indexes(args.subscribers, args.stalled, args.processes)
    readers = [
        Reader(i, stack.ports[i % len(stack.ports)], tokens[i]) for i in range(args.subscribers)
    ]
    for i in stall_set:
        readers[i].stalls = True
    for r in readers:
        r.batch = args.batch and target == "realtime"
    stalled_readers = [readers[i] for i in sorted(stall_set)]
    node: NodeReaders | None = None
    if args.node_readers:
        node = NodeReaders(
            [(r.index, r.port, r.token) for r in readers if not r.stalls],
            args.node_readers,
            batch=args.batch and target == "realtime",
        )
        readers = stalled_readers
    began = time.monotonic()
    await connect_all(readers)
    if node is not None:
        await node.start()
    run.setup_seconds = round(time.monotonic() - began, 2)

    start_at = time.time() + 4  # the publisher's Django setup
    stall_start = start_at + (args.duration - args.stall_seconds) / 2
    stall_end = stall_start + args.stall_seconds
    for r in stalled_readers:
        r.stall = (stall_start, stall_end)
    if node is not None:
        node.stall(stall_start, stall_end)
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--publisher",
        target,
        "--rate",
        str(args.rate),
        "--keys",
        str(args.keys),
        "--duration",
        str(args.duration),
        "--pad",
        str(args.pad),
        "--start-at",
        repr(start_at),
    ]
    publisher = await asyncio.create_subprocess_exec(
        *command,
        cwd=ROOT,
        env=publisher_env(target, stack),
        stdout=subprocess.PIPE,
    )
    samples: list[tuple[float, float, int]] = []  # (seconds from start_at, RSS MB, delivered)

    def delivered() -> int:
        return sum(len(r.received) for r in readers) + (node.delivered() if node else 0)

    def client_cpu() -> tuple[float, list[float]]:
        """This process's CPU seconds, and each Node reader process's."""
        return time.process_time(), [cpu_seconds([pid]) for pid in (node.pids() if node else [])]

    async def sample() -> None:
        while True:
            _, rss = stack.server_stats()
            samples.append((time.time() - start_at, rss / 2**20, delivered()))
            elapsed = time.time() - start_at
            if 0 <= elapsed <= args.duration:
                phase = "stalled" if stall_start <= time.time() < stall_end else ""
                progress(
                    f"{target} {args.subscribers}x{args.rate:g}",
                    elapsed,
                    args.duration,
                    f"RSS {rss / 2**20:.0f} MB, delivered {samples[-1][2]} {phase}",
                )
            await asyncio.sleep(1)

    async def probe_kernel() -> None:
        await asyncio.sleep(max(0.0, stall_end - 0.5 - time.time()))
        run.kernel_held_kb = kernel_held(stalled_readers)

    sampler = asyncio.create_task(sample())
    prober = asyncio.create_task(probe_kernel()) if stall_set else None
    await asyncio.sleep(max(0.0, start_at - time.time()))
    cpu0, _ = stack.server_stats()
    redis0 = cpu_seconds([stack.redis.proc.pid])
    (client0, nodes0), wall0 = client_cpu(), time.monotonic()
    machine0, own0 = machine_cpu_seconds(), stack.own_cpu_seconds()
    delivered0 = delivered()
    try:
        out, _ = await asyncio.wait_for(publisher.communicate(), args.duration * 2 + 60)
    except TimeoutError:
        publisher.kill()
        raise
    wall = time.monotonic() - wall0
    cpu1, _ = stack.server_stats()
    redis1 = cpu_seconds([stack.redis.proc.pid])
    client1, nodes1 = client_cpu()
    machine1, own1 = machine_cpu_seconds(), stack.own_cpu_seconds()
    during = delivered() - delivered0
    if publisher.returncode != 0:
        raise RuntimeError(f"the publisher exited with {publisher.returncode}")
    published = json.loads(out.decode().strip().splitlines()[-1])
    # The publisher has exited: its CPU is no longer in our process tree's.
    other = machine1 - machine0 - (own1 - own0 + published["cpu_total_seconds"])

    # The drain: until every reader has the last publication, or nothing
    # arrives for 5 s, at most args.drain seconds.
    final = published["offsets"][1]
    deadline = time.monotonic() + args.drain
    last, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        if all(r.max_offset >= final or r.close_code is not None for r in readers) and (
            node is None or node.min_offset() >= final
        ):
            break
        count = delivered()
        if count != last:
            last, last_change = count, time.monotonic()
        elif time.monotonic() - last_change > 5:
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.5)  # one more RSS sample after the drain
    sampler.cancel()
    if prober is not None:
        prober.cancel()
    sys.stderr.write("\n")
    if node is not None:
        await node.finish(*published["offsets"])
    if target == "realtime":
        run.extra = realtime_counters(stack)
    run.extra["redis_calls"] = redis_calls(stack)

    # --- the figures ---
    run.published = published["published"]
    run.publish_errors = published["errors"]
    run.publish_rate = round(run.published / published["seconds"], 1)
    run.publisher_max_behind_seconds = published["max_behind_seconds"]
    run.offered_per_second = round(run.published * args.subscribers / args.duration)
    run.delivered = delivered()
    run.deliveries_per_second = round(during / wall)
    keeping = [r for r in readers if r.stall is None]
    resumed = [r for r in readers if r.stall is not None]
    elsewhere = node.readers() if node is not None else []  # the Node readers' summaries
    if node is not None:
        run.latency_ms = node.latency_ms()
        run.latency_during_stall_ms = node.latency_ms("latencyDuringStall")
    else:
        run.latency_ms = ms([x for r in keeping for x in r.latencies])
        run.latency_during_stall_ms = ms(
            [
                lat
                for r in keeping
                for at, lat in zip(r.received, r.latencies, strict=True)
                if stall_start <= at < stall_end
            ]
        )
    first, final = published["offsets"]
    span = final - first + 1 if published["published"] else 0

    def missed(r: Reader) -> int:
        return span - sum(1 for o in r.offsets if first <= o <= final)

    expected_last = {key: tuple(value) for key, value in published["last"].items()}

    def latest(r: Reader) -> bool:
        return r.last == expected_last

    def latest_there(summary: dict) -> bool:
        return {k: tuple(v) for k, v in summary["last"].items()} == expected_last

    run.readers = len(keeping) + len(elsewhere)
    missing = [missed(r) for r in keeping] + [summary["missed"] for summary in elsewhere]
    if missing and span:
        run.readers_missed_percent = round(100 * statistics.fmean(missing) / span, 2)
        run.readers_missed_max = max(missing)
    run.readers_latest = sum(latest(r) for r in keeping) + sum(map(latest_there, elsewhere))
    run.resumed_latest = sum(latest(r) for r in resumed)
    if resumed:
        run.resumed_missed_mean = round(statistics.fmean(missed(r) for r in resumed), 1)
        run.resumed_missed_max = max(missed(r) for r in resumed)
        fresh = [r.fresh_at - r.resumed_at for r in resumed if r.fresh_at and r.resumed_at]
        if fresh:
            run.resumed_fresh_seconds = {
                "median": round(statistics.median(fresh), 2),
                "max": round(max(fresh), 2),
                "never": len(resumed) - len(fresh),
            }
        else:
            run.resumed_fresh_seconds = {"never": len(resumed)}
    run.duplicates = sum(r.duplicates for r in readers) + sum(x["duplicates"] for x in elsewhere)
    run.out_of_order = sum(r.out_of_order for r in readers) + sum(
        x["outOfOrder"] for x in elsewhere
    )
    # Evidence, a few readers' worth: what went wrong, and where.
    odd = [r for r in readers if r.anomalies][:3]
    if odd:
        run.extra["anomalies"] = {r.index: r.anomalies for r in odd}
    stale = [r for r in readers if not latest(r)][:3]
    if stale:
        run.extra["not_latest"] = {
            r.index: {
                k: {"expected": list(v), "got": list(r.last.get(k) or [])}
                for k, v in expected_last.items()
                if r.last.get(k) != v
            }
            for r in stale
        }
    stale_there = [x for x in elsewhere if not latest_there(x)][:3]
    if stale_there:
        run.extra["not_latest_node"] = {
            x["index"]: {k: x["last"].get(k) for k, v in expected_last.items()} for x in stale_there
        }
    # Every close a reader saw (it reconnected and resumed after each).
    closes = [code for r in readers for code in r.closes]
    closes += [code for x in elsewhere for code in x["closes"]]
    run.closed_by_server = dict(Counter(str(code) for code in closes))

    rel_start, rel_end = stall_start - start_at, stall_end - start_at

    def rss(lo: float, hi: float) -> list[float]:
        return [mb for t, mb, _ in samples if lo <= t < hi]

    before = rss(rel_start - 10, rel_start)
    inside = rss(rel_start, rel_end)
    after = rss(rel_end, args.duration)
    run.rss_mb = {
        "before": round(statistics.fmean(before), 1) if before else None,
        "during_max": round(max(inside), 1) if inside else None,
        "stall_end": round(inside[-1], 1) if inside else None,
        "after_max": round(max(after), 1) if after else None,
        "end": round(samples[-1][1], 1) if samples else None,
    }
    run.rss_series_mb = [[round(t), round(mb, 1)] for t, mb, _ in samples if t >= 0]
    server_cpu = cpu1 - cpu0
    run.server_cpu_percent = round(100 * server_cpu / wall, 1)
    run.server_cpu_us_per_delivery = round(1e6 * server_cpu / during, 1) if during else 0.0
    run.redis_cpu_percent = round(100 * (redis1 - redis0) / wall, 1)
    run.publisher_cpu_percent = round(100 * published["cpu_seconds"] / wall, 1)
    run.client_cpu_percent = round(100 * (client1 - client0) / wall, 1)
    node_percent = [round(100 * (b - a) / wall, 1) for a, b in zip(nodes0, nodes1, strict=True)]
    if node_percent:
        run.extra["node_readers_cpu_percent"] = node_percent
    run.client_bound = max([run.client_cpu_percent, *node_percent]) > 90
    run.other_cpu_percent = round(max(0.0, 100 * other / wall), 1)
    run.extra["publisher"] = {k: v for k, v in published.items() if k != "last"}
    await asyncio.wait([asyncio.ensure_future(r.close()) for r in readers], timeout=20)
    return run


# --- reporting ----------------------------------------------------------------------------


def number(value, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def markdown(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def name(r: Run) -> str:
    found = f"{r.target} {r.subscribers}×{r.rate:g}/s" + (f" pad {r.pad}" if r.pad else "")
    if r.client_bound:
        found += " CLIENT-BOUND"
    if r.other_cpu_percent > BUSY_PERCENT:
        found += " MACHINE-BUSY"
    return found


def table(runs: list[Run]) -> str:
    """Two tables: the readers that kept reading and the servers' cost; then the stall."""
    head = [
        "run",
        "pub/s",
        "offered frames/s",
        "delivered/s",
        "p50 ms",
        "p99 ms",
        "p99 in stall ms",
        "missed %",
        "latest of every key",
        "server CPU %",
        "µs / delivery",
        "Redis CPU %",
        "client CPU %",
    ]
    rows = [
        [
            name(r),
            number(r.publish_rate, 1),
            number(r.offered_per_second),
            number(r.deliveries_per_second),
            number(r.latency_ms.get("p50"), 1),
            number(r.latency_ms.get("p99"), 1),
            number(r.latency_during_stall_ms.get("p99"), 1),
            number(r.readers_missed_percent, 1),
            f"{r.readers_latest}/{r.readers}",
            number(r.server_cpu_percent),
            number(r.server_cpu_us_per_delivery, 1),
            number(r.redis_cpu_percent),
            number(r.client_cpu_percent),
        ]
        for r in runs
    ]
    stall_head = [
        "run",
        "stalled",
        "kernel-held KB / stalled",
        "resumed: latest of every key",
        "resumed: missed mean (max)",
        "resumed: fresh after s, median (max)",
        "RSS MB before",
        "RSS MB stall max",
        "RSS MB after max",
        "closed by server",
    ]
    stall_rows = []
    for r in runs:
        fresh = r.resumed_fresh_seconds
        stall_rows.append(
            [
                name(r),
                f"{r.stalled} × {r.stall_seconds:g} s",
                number(r.kernel_held_kb),
                f"{r.resumed_latest}/{r.stalled}",
                f"{number(r.resumed_missed_mean)} ({number(r.resumed_missed_max)})",
                f"{number(fresh.get('median'), 2)} ({number(fresh.get('max'), 2)})"
                + (f", never {fresh['never']}" if fresh.get("never") else ""),
                number(r.rss_mb.get("before")),
                number(r.rss_mb.get("during_max")),
                number(r.rss_mb.get("after_max")),
                ", ".join(f"{n} × {code}" for code, n in r.closed_by_server.items()) or "0",
            ]
        )
    return markdown(head, rows) + "\n\n" + markdown(stall_head, stall_rows)


def notes(runs: list[Run]) -> str:
    lines = []
    for r in runs:
        extra = {k: v for k, v in r.extra.items() if k != "publisher"}
        series = " ".join(f"{mb:.0f}" for _, mb in r.rss_series_mb)
        lines.append(
            f"{name(r)}: published {r.published} "
            f"(publisher at most {r.publisher_max_behind_seconds:g} s behind, "
            f"{r.publish_errors} errors, {r.publisher_cpu_percent:g} % CPU), "
            f"delivered {r.delivered:,}, dup {r.duplicates}, out of order {r.out_of_order}, "
            f"closed by the server {r.closed_by_server or 0}, readers missed at most "
            f"{r.readers_missed_max}, latency max {r.latency_ms.get('max')} ms, "
            f"others' CPU {r.other_cpu_percent:g} %"
            + (f", counters {json.dumps(extra)}" if extra else "")
            + f"\n  RSS MB each second: {series}"
        )
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------


def scales(args) -> list[tuple[int, float, int, int]]:
    """(subscribers, rate, stalled, pad) for each scale: --scales SUBSxRATE[xSTALLED[xPAD]],..."""
    if not args.scales:
        return [(args.subscribers, args.rate, args.stalled, args.pad)]
    found = []
    for item in args.scales.split(","):
        parts = item.lower().split("x")
        subscribers, rate = int(parts[0]), float(parts[1])
        stalled = int(parts[2]) if len(parts) > 2 else min(args.stalled, subscribers // 4)
        pad = int(parts[3]) if len(parts) > 3 else args.pad
        found.append((subscribers, rate, stalled, pad))
    return found


async def main_async(args) -> list[Run]:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    pin = bool(args.pin and args.processes == 1 and (os.cpu_count() or 0) >= 2)
    if pin:
        os.sched_setaffinity(0, {1})
    targets = TARGETS if args.target == "all" else args.target.split(",")
    runs = []
    for subscribers, rate, stalled, pad in scales(args):
        args.subscribers, args.rate, args.stalled, args.pad = subscribers, rate, stalled, pad
        for spelled in targets:
            # realtime[@CHECKOUT][:NAME=VALUE…]: the servers from another
            # checkout (a worktree of a baseline), with those settings
            # (project/settings.py reads them from the environment).
            target, *overrides = spelled.split(":")
            target, _, tree = target.partition("@")
            root = Path(tree).resolve() if tree else loadtest.ROOT
            saved = dict(os.environ)
            os.environ.update(item.split("=", 1) for item in overrides)
            try:
                stack = start_stack(target, args, pin, root)
            finally:
                os.environ.clear()
                os.environ.update(saved)
            try:
                run = await scenario(args, target, stack, pin)
            finally:
                stack.stop()
            run.target = spelled
            runs.append(run)
            print(table(runs[-1:]).split("\n\n")[0].splitlines()[-1], flush=True)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--target",
        default="all",
        help="realtime, plain, bare, or all (the three), or a comma list; realtime@CHECKOUT runs "
        "the servers from another checkout (a baseline's worktree), realtime:NAME=VALUE[:…] with "
        "those settings (e.g. realtime:TOPICS_HAND_OUT_SHARE=1)",
    )
    parser.add_argument("--subscribers", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=200, help="publications per second")
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--duration", type=float, default=60, help="seconds of publishing")
    parser.add_argument("--stalled", type=int, default=50, help="subscribers that stop reading")
    parser.add_argument("--stall-seconds", type=float, default=20, help="in the middle")
    parser.add_argument(
        "--scales",
        default="",
        help="SUBSCRIBERSxRATE[xSTALLED[xPAD]],... run each (overrides --subscribers, --rate, "
        "--stalled and --pad; STALLED defaults to --stalled, at most a quarter of the "
        "subscribers, PAD to --pad)",
    )
    parser.add_argument("--pad", type=int, default=0, help="characters of padding per publication")
    parser.add_argument("--processes", type=int, default=2, help="daphne processes per target")
    parser.add_argument("--drain", type=float, default=30, help="at most, after the last publish")
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    parser.add_argument(
        "--node-readers",
        type=int,
        default=2,
        help="Node processes for the readers that keep reading (0: all in this process)",
    )
    parser.add_argument(
        "--no-batch",
        dest="batch",
        action="store_false",
        help='the Node readers subscribe without "batch": true',
    )
    parser.add_argument("--json", default="", help="write the runs here")
    parser.add_argument("--publisher", choices=TARGETS, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publisher:
        print(json.dumps(asyncio.run(publish_loop(args))), flush=True)
        return
    for subscribers, rate, stalled, pad in scales(args):
        if subscribers > 20000 or rate > 5000 or stalled > subscribers or pad > 60000:
            raise SystemExit(
                "bounded: at most 20,000 subscribers, 5,000 publications/s, 60,000 of padding"
            )
    if args.duration > 600 or args.stall_seconds >= args.duration or args.drain > 300:
        raise SystemExit("bounded: at most 600 s of publishing, the stall inside it, 300 s drain")
    runs = asyncio.run(main_async(args))
    info = machine()
    if args.json:
        payload = {"machine": info, "args": vars(args), "runs": [asdict(r) for r in runs]}
        Path(args.json).write_text(json.dumps(payload, indent=2))
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    pinning = (
        "server on core 0, the rest on core 1"
        if runs and runs[0].pinned
        else f"{args.processes} daphne processes per target, nothing pinned"
    )
    print(
        f"\nOne topic, {args.keys} keys, {args.duration:g} s of publishing; the stalled "
        f"readers stop for {args.stall_seconds:g} s in the middle. {info['cores']} cores "
        f"({info['cpu']}), {pinning}, Python {info['python']}; {versions}\n"
    )
    print(table(runs))
    print()
    print(notes(runs), flush=True)


if __name__ == "__main__":
    main()
