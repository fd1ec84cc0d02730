"""
Stalled readers at scale: a busy room where many clients stop reading, under
daphne and under uvicorn, each on fresh PostgreSQL and Redis.

    python bench/slow_readers.py                                 # the issue's scale
    python bench/slow_readers.py --server uvicorn --stalled 20 --messages 1000

tests/live/test_slow_readers_live.py at a larger scale, with figures instead of
assertions. In the room `general`, 1 poster posts --messages messages of --size
characters (random, since uvicorn compresses frames), reading its acks as it
posts, and 2 readers keep reading. First a baseline with nobody stalled, then the
same with --stalled sockets that join and stop reading (a 16 KiB receive
buffer, the client library's queue of one frame), all in one server process.
Measured:

- the server's RSS (VmRSS, sampled every 0.2 s): just before the stalled
  phase's posting, the most during it, and after it (every message read by
  the readers, every stalled socket closed by the server), before any
  stalled client reads again;
- how many stalled sockets were closed with 4413 (what each reads at last,
  and the server's realtime_output_overflows_total);
- each reader's latency per message (post time to receive time, both here),
  with nobody stalled and with the stalled sockets, and that each reader got
  every message once, in order;
- each stalled client, reading until it is closed, then reconnecting and
  joining with `since` = the last seq it read: whether it then gets every
  remaining message once and in order, and how long the resumes took.

A table per server, then one JSON line with every figure. Traffic stays on
127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import secrets
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The live test's module imports a model: Django is set up (no database is used here).
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
import django  # noqa: E402

django.setup()

from bench.loadtest import Stack, machine, percentiles  # noqa: E402
from tests.live.conftest import METRICS_HEADERS, SERVER_KINDS, ServerProcess, Ws  # noqa: E402
from tests.live.test_slow_readers_live import (  # noqa: E402
    read_until_closed,
    rss_kib,
    stalled_client,
)
from tests.servers import PostgresServer, RedisServer  # noqa: E402

ROOM = "general"  # the room stalled_client joins
PHASE_TIMEOUT = 600.0  # seconds: the bound on any one phase
FRAME_TIMEOUT = 30.0  # seconds: the bound on any one awaited frame


class RssSampler:
    """VmRSS of one process every `interval` seconds, in a thread (so a busy
    event loop here does not delay it)."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int]] = []  # (monotonic, KiB)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.samples.append((time.monotonic(), rss_kib(self.pid)))
            except OSError:
                return
            self.stop_event.wait(self.interval)

    def start(self) -> RssSampler:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(5)

    def max_mb(self, start: float, end: float) -> float:
        within = [kib for t, kib in self.samples if start <= t <= end]
        return round(max(within) / 1024, 1) if within else 0.0


def mb(kib: int) -> float:
    return round(kib / 1024, 1)


def content(n: int, size: int) -> str:
    """Message n: its index and post time, then random characters up to `size`."""
    head = f"{n:06d} {time.time():.6f} "
    return head + secrets.token_urlsafe(size)[: size - len(head)]


def parse(text: str) -> tuple[int, float]:
    n, posted, _ = text.split(" ", 2)
    return int(n), float(posted)


async def overflows(server: ServerProcess) -> float:
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"{server.http}/metrics", headers=METRICS_HEADERS)).text
    found = re.search(r"^realtime_output_overflows_total (\S+)", text, re.M)
    return float(found.group(1)) if found else 0.0


class Reader:
    """A member that keeps reading: (seq, n, latency) of every message."""

    def __init__(self, ws: Ws):
        self.ws = ws
        self.got: list[tuple[int, int, float]] = []

    async def read(self, count: int) -> None:
        while len(self.got) < count:
            frame = await self.ws.recv_type("message", timeout=FRAME_TIMEOUT)
            now = time.time()
            self.ws.backlog.clear()  # presence and the like: not counted
            if frame["room"] != ROOM:
                continue
            n, posted = parse(frame["content"])
            self.got.append((frame["seq"], n, now - posted))

    def check(self, first_seq: int, count: int) -> bool:
        """Every message once, in order: seqs from first_seq, and the poster's indices."""
        return [s for s, _, _ in self.got] == list(range(first_seq, first_seq + count)) and [
            n for _, n, _ in self.got
        ] == list(range(count))


async def post_all(poster: Ws, count: int, size: int) -> list[int]:
    """Post `count` messages, reading each ack (and the poster's own copies)
    as it goes: a poster that did not read would be a stalled reader itself."""
    seqs = []
    for n in range(count):
        await poster.send(
            {
                "type": "message",
                "room": ROOM,
                "content": content(n, size),
                "client_id": str(uuid.uuid4()),
            }
        )
        ack = await poster.recv_type("ack", "error", timeout=FRAME_TIMEOUT)
        if ack["type"] != "ack":
            raise RuntimeError(f"message {n} refused: {ack}")
        seqs.append(ack["seq"])
        poster.backlog.clear()
    return seqs


async def phase(poster: Ws, readers: list[Reader], count: int, size: int) -> dict:
    """Post `count` messages while the readers read them; their latencies and checks."""
    for reader in readers:
        reader.got = []
    start = time.monotonic()
    reading = [asyncio.create_task(r.read(count)) for r in readers]
    seqs = await asyncio.wait_for(post_all(poster, count, size), PHASE_TIMEOUT)
    posted = time.monotonic() - start
    await asyncio.wait_for(asyncio.gather(*reading), PHASE_TIMEOUT)
    first = seqs[0]
    latencies = [lat for r in readers for _, _, lat in r.got]
    return {
        "first_seq": first,
        "last_seq": seqs[-1],
        "posting_seconds": round(posted, 2),
        "posts_per_second": round(count / posted, 1),
        "latency_ms": percentiles(latencies),
        "readers_complete_in_order": [r.check(first, count) for r in readers],
    }


async def resume(server: ServerProcess, token: str, since: int, last: int, size: int) -> dict:
    """Reconnect, join with `since`; whether every message after it up to
    `last` comes once and in order, and nothing more."""
    start = time.monotonic()
    again = None
    try:
        again = await Ws.connect(server.ws, token=token, ping_interval=None)
        joined = await again.join(ROOM, since=since)
        if joined["type"] != "joined" or joined.get("truncated"):
            return {"ok": False, "why": f"join: {joined}", "seconds": time.monotonic() - start}
        want = last - since
        rest = await again.messages(ROOM, want, timeout=FRAME_TIMEOUT)
        seconds = time.monotonic() - start
        extra = [f for f in await again.quiet(0.2) if f.get("type") == "message"]
        seqs = [m["seq"] for m in rest]
        ok = seqs == list(range(since + 1, last + 1)) and not extra
        why = "" if ok else f"got {len(seqs)} (first {seqs[:3]}), {len(extra)} extra"
        return {"ok": ok, "why": why, "seconds": seconds, "messages": len(rest)}
    except (TimeoutError, OSError, Exception) as exc:  # noqa: BLE001 - counted and reported
        return {"ok": False, "why": repr(exc), "seconds": time.monotonic() - start}
    finally:
        if again is not None:
            await again.close()


async def run_server(kind: str, args) -> dict:
    """One server kind on fresh PostgreSQL and Redis: baseline, then the stalled phase."""
    t0 = time.monotonic()
    redis = RedisServer().start()
    pg = PostgresServer().start()
    server = None
    sampler = None
    try:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "DATABASE_URL": pg.url,
            "REDIS_URL": redis.url,
        }
        # Users and tokens as the load tool makes them: poster, 2 readers, one per stalled socket.
        seeding = Stack("realtime", False, users=3 + args.stalled, rooms=0)
        seeding._prepare_database(env)
        tokens = seeding.tokens
        subprocess.run(
            [sys.executable, "manage.py", "shell", "-c"]
            + [f"from chat.models import Room; Room.objects.create(slug={ROOM!r}, name='General')"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        server_env = {
            "CHAT_MESSAGE_RATE": "off",
            "CHAT_MAX_CONTENT_CHARS": str(args.size),
            "CHAT_RESUME_MAX_MESSAGES": str(max(args.messages, 1000)),
            "WS_MAX_CONNECTIONS_PER_USER": "0",
        }
        if args.cap is not None:
            server_env["WS_MAX_PENDING_OUTPUT_BYTES"] = str(args.cap)
        server = ServerProcess(
            kind=kind, redis_url=redis.url, database=pg.url, env=server_env
        ).start()
        pid = server.proc.pid
        sampler = RssSampler(pid).start()
        result: dict = {"server": kind, "log": str(server.log_path)}

        poster = await Ws.connect(server.ws, token=tokens[0], ping_interval=None)
        readers = [
            Reader(await Ws.connect(server.ws, token=t, ping_interval=None)) for t in tokens[1:3]
        ]
        for ws in (poster, *(r.ws for r in readers)):
            joined = await ws.join(ROOM)
            assert joined["type"] == "joined", joined

        # --- baseline: nobody stalled -------------------------------------------------
        progress(kind, "baseline")
        baseline = await phase(poster, readers, args.baseline_messages, args.size)
        result["baseline"] = baseline

        # --- stalled: sockets that join and read nothing -------------------------------
        progress(kind, f"{args.stalled} stalled sockets")
        stalled = [await stalled_client(server, t) for t in tokens[3:]]
        await asyncio.sleep(1.0)  # their joins are in
        before_kib = rss_kib(pid)
        t_before = time.monotonic()
        progress(kind, "stalled phase")
        cpu0 = time.process_time()
        loaded = await phase(poster, readers, args.messages, args.size)
        first, last = loaded["first_seq"], loaded["last_seq"]
        # The server has closed every stalled socket (or given up waiting for it).
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and await overflows(server) < args.stalled:
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)
        after_kib = rss_kib(pid)
        t_after = time.monotonic()
        loaded["client_cpu_percent"] = round(
            100 * (time.process_time() - cpu0) / (t_after - t_before), 1
        )
        loaded["overflows_metric"] = await overflows(server)
        result["stalled_phase"] = loaded
        result["rss_mb"] = {
            "before": mb(before_kib),
            "max_during": sampler.max_mb(t_before, t_after),
            "after": mb(after_kib),
            "growth": round((after_kib - before_kib) / 1024, 1),
            "max_growth": round(sampler.max_mb(t_before, t_after) - before_kib / 1024, 1),
        }
        latency_ratio = {
            q: round(loaded["latency_ms"][q] / baseline["latency_ms"][q], 2)
            for q in ("p50", "p99", "max")
            if baseline["latency_ms"].get(q)
        }
        result["latency_vs_baseline"] = latency_ratio

        # --- the stalled clients read until closed, all at once ------------------------
        progress(kind, "stalled clients read until closed")
        t_read = time.monotonic()
        closes = await asyncio.wait_for(
            asyncio.gather(*(read_until_closed(c) for c in stalled), return_exceptions=True),
            PHASE_TIMEOUT,
        )
        codes: dict[str, int] = {}
        ended: list[int] = []  # the last seq each read (first - 1: none)
        stalled_in_order = 0
        read_before_close = []
        for outcome in closes:
            if isinstance(outcome, BaseException):
                codes[repr(outcome)[:60]] = codes.get(repr(outcome)[:60], 0) + 1
                ended.append(-1)
                continue
            seqs, code = outcome
            codes[str(code)] = codes.get(str(code), 0) + 1
            stalled_in_order += seqs == list(range(first, first + len(seqs)))
            read_before_close.append(len(seqs))
            ended.append(seqs[-1] if seqs else first - 1)
        result["stalled"] = {
            "sockets": args.stalled,
            "closed_4413": codes.get("4413", 0),
            "close_codes": codes,
            "read_before_close_in_order": stalled_in_order,
            "messages_read_before_close": {
                "min": min(read_before_close, default=0),
                "max": max(read_before_close, default=0),
            },
            "read_seconds": round(time.monotonic() - t_read, 2),
        }
        rss_drained = rss_kib(pid)

        # --- each resumes with `since` ------------------------------------------------
        progress(kind, f"{args.stalled} resumes")
        gate = asyncio.Semaphore(args.resume_concurrency)

        async def gated(token: str, since: int) -> dict:
            async with gate:
                if since < 0:
                    return {"ok": False, "why": "its stall did not end in a close", "seconds": 0}
                return await resume(server, token, since, last, args.size)

        # Meanwhile the readers and the poster read what comes (the resumers'
        # presence): a client that did not would be a stalled reader itself.
        extra = {"messages": 0}

        async def keep_reading(ws: Ws) -> None:
            while True:
                try:
                    frame = await ws.recv(timeout=3600)
                except TimeoutError:
                    continue
                ws.backlog.clear()
                extra["messages"] += frame.get("type") == "message"

        keepers = [asyncio.create_task(keep_reading(w)) for w in (poster, *(r.ws for r in readers))]
        t_resume = time.monotonic()
        cpu1 = time.process_time()
        resumed = await asyncio.wait_for(
            asyncio.gather(*(gated(t, s) for t, s in zip(tokens[3:], ended, strict=True))),
            PHASE_TIMEOUT,
        )
        t_resumed = time.monotonic()
        failures = [r["why"] for r in resumed if not r["ok"]]
        result["resume"] = {
            "complete_in_order": sum(r["ok"] for r in resumed),
            "of": len(resumed),
            "concurrency": args.resume_concurrency,
            "messages_replayed": sum(r.get("messages", 0) for r in resumed),
            "total_seconds": round(t_resumed - t_resume, 2),
            "per_resume_seconds": {
                k: round(v / 1000, 3)
                for k, v in percentiles([r["seconds"] for r in resumed]).items()
                if k in ("p50", "max")
            },
            "client_cpu_percent": round(
                100 * (time.process_time() - cpu1) / max(t_resumed - t_resume, 1e-9), 1
            ),
            "failures": failures[:5],
        }
        result["rss_mb"]["after_stalled_read"] = mb(rss_drained)
        result["rss_mb"]["max_during_resumes"] = sampler.max_mb(t_resume, t_resumed)
        result["rss_mb"]["end"] = mb(rss_kib(pid))

        # The readers and the poster are still served, and got no message twice.
        for keeper in keepers:
            keeper.cancel()
        await asyncio.gather(*keepers, return_exceptions=True)
        leftovers = extra["messages"]
        for reader in readers:
            leftovers += sum(f.get("type") == "message" for f in await reader.ws.quiet(0.3))
            pong = await reader.ws.request({"type": "ping"}, "pong", timeout=10)
            assert pong["type"] == "pong"
        result["readers_extra_messages"] = leftovers
        for ws in (poster, *(r.ws for r in readers)):
            await ws.close()
        result["seconds"] = round(time.monotonic() - t0, 1)
        return result
    finally:
        if sampler is not None:
            sampler.stop()
        if server is not None:
            server.stop()
        pg.stop()
        redis.stop()


def progress(kind: str, what: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {kind}: {what}", file=sys.stderr, flush=True)


def table(r: dict) -> str:
    b, s, rss, st, rs = r["baseline"], r["stalled_phase"], r["rss_mb"], r["stalled"], r["resume"]
    bl, sl = b["latency_ms"], s["latency_ms"]
    rows = [
        (
            "server RSS before / max during / after",
            f"{rss['before']} / {rss['max_during']} / {rss['after']} MB",
        ),
        (
            "RSS growth (after - before; max - before)",
            f"{rss['growth']:+} MB; {rss['max_growth']:+} MB" + ("  (target < 30 MB)"),
        ),
        (
            "RSS after stalled read / max in resumes / end",
            f"{rss['after_stalled_read']} / {rss['max_during_resumes']} / {rss['end']} MB",
        ),
        (
            "stalled closed with 4413",
            f"{st['closed_4413']}/{st['sockets']} (codes {st['close_codes']}; "
            f"overflow metric {s['overflows_metric']:g})",
        ),
        (
            "stalled read before close",
            f"{st['messages_read_before_close']['min']}-"
            f"{st['messages_read_before_close']['max']} messages, in order: "
            f"{st['read_before_close_in_order']}/{st['sockets']}",
        ),
        (
            "reader latency baseline p50/p99/max",
            f"{bl.get('p50')} / {bl.get('p99')} / {bl.get('max')} ms",
        ),
        (
            "reader latency stalled p50/p99/max",
            f"{sl.get('p50')} / {sl.get('p99')} / {sl.get('max')} ms",
        ),
        (
            "stalled / baseline (p50, p99, max)",
            ", ".join(f"{v}x" for v in r["latency_vs_baseline"].values()),
        ),
        (
            "posting rate baseline / stalled",
            f"{b['posts_per_second']} / {s['posts_per_second']} msg/s",
        ),
        (
            "readers complete, once, in order",
            f"baseline {b['readers_complete_in_order']}, "
            f"stalled {s['readers_complete_in_order']}, extra {r['readers_extra_messages']}",
        ),
        ("resumes complete, once, in order", f"{rs['complete_in_order']}/{rs['of']}"),
        (
            "resumes took (all; per p50/max)",
            f"{rs['total_seconds']} s; {rs['per_resume_seconds']} s "
            f"({rs['concurrency']} at a time, {rs['messages_replayed']} messages, client "
            f"{rs['client_cpu_percent']} % CPU)",
        ),
        ("run took", f"{r['seconds']} s"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"== {r['server']} =="] + [f"  {k:<{width}}  {v}" for k, v in rows]
    if rs["failures"]:
        lines.append(f"  resume failures (first 5): {rs['failures']}")
    return "\n".join(lines)


async def main_async(args) -> list[dict]:
    results = []
    for kind in args.server.split(","):
        results.append(await run_server(kind, args))
        print(table(results[-1]), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--server", default="daphne,uvicorn", help="daphne, uvicorn or both, in turn"
    )
    parser.add_argument(
        "--stalled", type=int, default=100, help="sockets that join and stop reading"
    )
    parser.add_argument("--messages", type=int, default=5000, help="posted with them stalled")
    parser.add_argument("--baseline-messages", type=int, default=None, help="default: --messages")
    parser.add_argument("--size", type=int, default=4096, help="characters per message")
    parser.add_argument("--resume-concurrency", type=int, default=None, help="default: --stalled")
    parser.add_argument(
        "--cap", type=int, default=None, help="WS_MAX_PENDING_OUTPUT_BYTES (default: the server's)"
    )
    args = parser.parse_args()
    for kind in args.server.split(","):
        if kind not in SERVER_KINDS:
            raise SystemExit(f"--server: {kind!r} is none of {', '.join(SERVER_KINDS)}")
    if not (0 < args.stalled <= 1000 and 0 < args.messages <= 100_000 and 64 <= args.size <= 65536):
        raise SystemExit("bounded: 1-1000 stalled, 1-100,000 messages, 64-65,536 characters")
    args.baseline_messages = args.baseline_messages or args.messages
    args.resume_concurrency = args.resume_concurrency or args.stalled
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    start = time.monotonic()
    results = asyncio.run(main_async(args))
    summary = {
        "args": vars(args),
        "machine": machine(),
        "seconds": round(time.monotonic() - start, 1),
        "results": results,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
