"""
Live HTML over SSE against the same deliveries as JSON over /ws/ (contract
§10, §8): N open pages on one topic (plain HTTP clients reading
`GET /events/topics/live:bench/?format=turbo`, not browsers), a publisher at
RATE fragments a second of about 1 KB rendered from a template
(html_stream(...).append(template=...)); then, on the same server in the same
run, N WebSocket subscribers of another topic and the same publications as
JSON (apublish-equivalent `publish()` of the same text).

    python bench/html_streams.py                      # 1,000 pages, 50/s, 10 s each
    python bench/html_streams.py --pages 300 --seconds 8

It starts its own redis-server (a free port) and one daphne (project.asgi,
SQLite in a temporary directory, REDIS_URL set, so a publisher in this
process reaches it), reads the server's VmRSS and CPU from /proc.
Figures: render cost per publication (rendered once, whatever the number of
pages), p50/p99 publish→receipt over every page's every fragment, server CPU
per delivery, memory per open stream, each for HTML/SSE and JSON/WS, and
the ratios. Everything on loopback, bounded by --timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.sse_streams import free_port, proc_status, raise_fd_limit  # noqa: E402

HTML_TOPIC, JSON_TOPIC = "live:bench", "live:benchjson"
STAMP = re.compile(rb'class="task">(\d+\.\d+) ')
JSON_STAMP = re.compile(rb'"title": ?"(\d+\.\d+) ')
PAD = "x" * 900  # with the template's markup, about 1 KB a fragment


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="html-bench-")
        self.redis_port, self.port = free_port(), free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL"}},
            "DATABASE_URL": f"sqlite:///{self.dir}/db.sqlite3",
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "SSE_MAX_STREAMS_PER_USER": "0",
            "WS_MAX_CONNECTIONS_PER_USER": "100000",
            "CHAT_JOIN_RATE": "off",
            "TOPICS_SUBSCRIBE_RATE": "off",
            "LOG_LEVEL": "WARNING",
        }
        self.procs: list[subprocess.Popen] = []

    def start(self) -> str:
        self.procs.append(
            subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(self.redis_port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                stdout=subprocess.DEVNULL,
            )
        )
        manage = [sys.executable, "manage.py"]
        run = dict(cwd=ROOT, env=self.env, check=True, capture_output=True, text=True)
        subprocess.run([*manage, "migrate", "--no-input", "-v", "0"], **run)  # type: ignore[call-overload]
        setup = (
            "from django.contrib.auth import get_user_model\n"
            "from rest_framework.authtoken.models import Token\n"
            "u = get_user_model().objects.create_user('reader', password='x', is_staff=True)\n"
            "print(Token.objects.get_or_create(user=u)[0].key)\n"
        )
        out = subprocess.run([*manage, "shell", "-c", setup], **run)  # type: ignore[call-overload]
        self.token = out.stdout.split()[-1]
        self.daphne = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port)]
            + ["project.asgi:application"],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.procs.append(self.daphne)
        for _ in range(600):
            try:
                import socket

                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return f"127.0.0.1:{self.port}"
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("daphne did not start")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


class Page:
    """One open page's stream on a raw socket, collecting latencies."""

    def __init__(self, latencies: list[float]) -> None:
        self.latencies = latencies
        self.buffer = b""

    async def open(self, port: int, token: str) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        path = f"/events/topics/{HTML_TOPIC}/?format=turbo"
        self.writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Token {token}\r\n\r\n".encode()
        )
        while b"retry:" not in self.buffer:
            chunk = await self.reader.read(65536)
            if not chunk:
                raise ConnectionError(self.buffer[:200])
            self.buffer += chunk
        self.buffer = b""

    async def read(self) -> None:
        while chunk := await self.reader.read(65536):
            now = time.time()
            self.buffer += chunk
            *events, self.buffer = self.buffer.split(b"\n\n")
            for event in events:
                for stamp in STAMP.findall(event):
                    self.latencies.append(now - float(stamp))


async def ws_reader(port: int, token: str, latencies: list[float], ready: asyncio.Event) -> None:
    import websockets

    headers = {"Authorization": f"Token {token}"}
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws/", additional_headers=headers) as ws:
        await ws.send(json.dumps({"type": "subscribe", "topic": JSON_TOPIC}))
        answer = json.loads(await ws.recv())
        if answer.get("type") != "subscribed":
            raise RuntimeError(f"not subscribed: {answer}")
        ready.set()
        async for frame in ws:
            now = time.time()
            raw = frame.encode() if isinstance(frame, str) else frame
            latencies.extend(now - float(s) for s in JSON_STAMP.findall(raw))


def publisher(kind: str, rate: int, seconds: float) -> dict:
    """Publish at `rate`/s for `seconds`; render time per publication."""
    from django.template.loader import render_to_string

    from django_realtime import html_stream
    from django_realtime.topics import publish
    from project.models import Task

    stream, renders, sent = html_stream(HTML_TOPIC), [], 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        title = f"{time.time():.6f} {PAD}"
        task = Task(pk=sent + 1, title=title, owner_id=1)
        if kind == "html":
            t0 = time.perf_counter()
            html = render_to_string("project/live/task.html", {"task": task})
            renders.append(time.perf_counter() - t0)
            stream.append("tasks", html=html)
        else:
            publish(JSON_TOPIC, {"task": {"id": task.pk, "title": title}})
        sent += 1
        time.sleep(max(0.0, (sent / rate) - (time.monotonic() - start)))
    return {"sent": sent, "render_ms": statistics.mean(renders) * 1000 if renders else None}


async def phase(kind: str, args, server: Server) -> dict:
    port, pid = server.port, server.daphne.pid
    latencies: list[float] = []
    before = proc_status(pid)["VmRSS"]
    tasks = []
    if kind == "html":
        pages = [Page(latencies) for _ in range(args.pages)]
        for i in range(0, args.pages, 100):
            await asyncio.gather(*(p.open(port, server.token) for p in pages[i : i + 100]))
        tasks = [asyncio.create_task(p.read()) for p in pages]
    else:
        for i in range(0, args.pages, 100):
            readies = [asyncio.Event() for _ in range(min(100, args.pages - i))]
            tasks += [
                asyncio.create_task(ws_reader(port, server.token, latencies, ready))
                for ready in readies
            ]
            await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 60)
    await asyncio.sleep(1)
    opened = proc_status(pid)["VmRSS"]
    cpu0 = cpu_seconds(pid)
    published = await asyncio.to_thread(publisher, kind, args.rate, args.seconds)
    await asyncio.sleep(1.5)  # the last deliveries
    cpu = cpu_seconds(pid) - cpu0
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)  # closed, cancelled: done either way
    expected = published["sent"] * args.pages
    ordered = sorted(latencies)
    return {
        "kind": kind,
        "pages": args.pages,
        "published": published["sent"],
        "delivered": len(latencies),
        "missing": expected - len(latencies),
        "render_ms_per_publication": published["render_ms"],
        "p50_ms": ordered[len(ordered) // 2] * 1000 if ordered else None,
        "p99_ms": ordered[int(len(ordered) * 0.99)] * 1000 if ordered else None,
        "server_cpu_us_per_delivery": cpu / max(1, len(latencies)) * 1e6,
        "server_cpu_percent": cpu / (args.seconds + 1.5) * 100,
        "kib_per_open_stream": (opened - before) / args.pages,
    }


async def main_async(args) -> list[dict]:
    server = Server()
    address = server.start()
    os.environ.update({k: server.env[k] for k in ("DATABASE_URL", "REDIS_URL")})
    os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings"
    import django

    django.setup()
    print(f"server {address}, {args.pages} pages, {args.rate}/s for {args.seconds}s", flush=True)
    try:
        return [await phase(kind, args, server) for kind in ("html", "json")]
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    raise_fd_limit(args.pages * 2 + 100)
    runs = asyncio.run(asyncio.wait_for(main_async(args), args.timeout))
    html, js = runs
    for run in runs:
        print(json.dumps(run))
    for name in ("p50_ms", "p99_ms", "server_cpu_us_per_delivery", "kib_per_open_stream"):
        if html[name] and js[name]:
            print(f"HTML/SSE ÷ JSON/WS {name}: {html[name] / js[name]:.2f}")


if __name__ == "__main__":
    main()
