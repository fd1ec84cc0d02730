"""
How many SSE streams one daphne process holds, and what each costs.

By default the script starts its own daphne on the embedded defaults (SQLite
in a temporary directory, the in-memory channel layer, one process), creates
two users, opens N notification streams (GET /events/notifications/) for one
of them, reads the process's VmRSS and thread count from /proc before and
after, then has the other user mention the first over REST and times how long
the notification takes to reach every stream. Everything stays on loopback
and the whole run is bounded by --timeout.

    python bench/sse_streams.py --streams 1000
    python bench/sse_streams.py --url http://127.0.0.1:8000 --token KEY --poster-token KEY2 \\
        --pid 1234      # an existing server on this machine; it must allow N
                        # streams per user (SSE_MAX_STREAMS_PER_USER=0)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS (KiB), Threads and open file descriptors of a process."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in {"VmRSS", "Threads"}:
            fields[name] = int(value.split()[0])
    fields["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return fields


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


class OwnServer:
    """daphne on the embedded defaults, in a temporary directory."""

    SETUP = (
        "from django.contrib.auth import get_user_model\n"
        "from rest_framework.authtoken.models import Token\n"
        "from chat.models import Room\n"
        "User = get_user_model()\n"
        "Room.objects.get_or_create(slug='bench', defaults={'name': 'Bench'})\n"
        "keys = [Token.objects.get_or_create(user=User.objects.create_user(n, password='x'))[0].key"
        " for n in ('reader', 'poster')]\n"
        "print(' '.join(keys))\n"
    )

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="sse-bench-")
        self.port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}},
            "DATABASE_URL": f"sqlite:///{self.dir}/db.sqlite3",
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "SSE_MAX_STREAMS_PER_USER": "0",
            "CHAT_MESSAGE_RATE": "off",
            "LOG_LEVEL": "WARNING",
        }
        self.proc: subprocess.Popen | None = None

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return result.stdout

    def start(self) -> tuple[str, str, str]:
        self.manage("migrate", "--no-input", "-v", "0")
        reader, poster = self.manage("shell", "-c", self.SETUP).splitlines()[-1].split()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port)]
            + ["project.asgi:application"],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("daphne did not start")
        return f"http://127.0.0.1:{self.port}", reader, poster

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class Stream:
    """One SSE stream on a raw socket: cheap enough to open thousands."""

    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.buffer = b""

    async def open(self, host: str, port: int, path: str, token: str) -> None:
        self.reader, self.writer = await asyncio.open_connection(host, port)
        self.writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Authorization: Token {token}\r\nAccept: text/event-stream\r\n\r\n"
            ).encode()
        )
        await self.writer.drain()
        await self.wait_for(b"retry:")
        if not self.buffer.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(self.buffer[:200].decode(errors="replace"))

    async def wait_for(self, marker: bytes) -> None:
        while marker not in self.buffer:
            chunk = await self.reader.read(65536)
            if not chunk:
                raise ConnectionError("stream closed")
            self.buffer += chunk

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def post_mention(base: str, token: str, username: str) -> None:
    request = urllib.request.Request(
        f"{base}/api/rooms/bench/messages/",
        data=json.dumps({"content": f"@{username} ping"}).encode(),
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201


async def run(args: argparse.Namespace, base: str, token: str, poster: str, pid: int) -> dict:
    parts = urlsplit(base)
    host, port = parts.hostname, parts.port or 80
    path = "/events/notifications/"
    warm = Stream()
    await warm.open(host, port, path, token)  # Django's first request loads a lot
    warm.close()
    await asyncio.sleep(1.0)
    before = proc_status(pid)
    streams: list[Stream] = []
    failures: list[str] = []
    started = time.monotonic()
    for offset in range(0, args.streams, args.batch):
        batch = [Stream() for _ in range(min(args.batch, args.streams - offset))]
        results = await asyncio.gather(
            *(s.open(host, port, path, token) for s in batch), return_exceptions=True
        )
        for stream, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                failures.append(repr(result))
                stream.close()
            else:
                streams.append(stream)
    open_seconds = time.monotonic() - started
    await asyncio.sleep(2.0)  # let the allocator settle
    after = proc_status(pid)
    for stream in streams:
        stream.buffer = b""
    sent = time.monotonic()
    await asyncio.to_thread(post_mention, base, poster, args.username)
    reached = await asyncio.gather(
        *(asyncio.wait_for(s.wait_for(b"event: notification"), 30) for s in streams),
        return_exceptions=True,
    )
    fanout_seconds = time.monotonic() - sent
    delivered = sum(1 for r in reached if not isinstance(r, BaseException))
    for stream in streams:
        stream.close()
    await asyncio.sleep(5.0)  # closing spawns short-lived threads in Django; let them end
    closed = proc_status(pid)
    held = len(streams)
    return {
        "streams_requested": args.streams,
        "streams_held": held,
        "open_failures": len(failures),
        "first_failure": failures[0] if failures else None,
        "seconds_to_open": round(open_seconds, 2),
        "rss_before_kib": before["VmRSS"],
        "rss_with_streams_kib": after["VmRSS"],
        "rss_per_stream_kib": round((after["VmRSS"] - before["VmRSS"]) / held, 1) if held else None,
        "threads_before": before["Threads"],
        "threads_with_streams": after["Threads"],
        "fds_with_streams": after["fds"],
        "notification_reached_streams": delivered,
        "fanout_seconds": round(fanout_seconds, 3),
        "rss_after_close_kib": closed["VmRSS"],
        "threads_after_close": closed["Threads"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100, help="streams opened at once")
    parser.add_argument("--url", help="an existing server (loopback only)")
    parser.add_argument("--token", help="with --url: the reader's API token")
    parser.add_argument("--poster-token", help="with --url: a token of another user")
    parser.add_argument("--username", default="reader", help="with --url: the reader's name")
    parser.add_argument("--pid", type=int, help="with --url: the server's process id")
    parser.add_argument("--timeout", type=float, default=300, help="bound on the whole run (s)")
    args = parser.parse_args()
    raise_fd_limit(args.streams * 2 + 256)
    server = None
    try:
        if args.url:
            if urlsplit(args.url).hostname not in LOOPBACK:
                parser.error("--url must be a loopback address")
            if not (args.token and args.poster_token and args.pid):
                parser.error("--url needs --token, --poster-token and --pid")
            base, token, poster, pid = args.url.rstrip("/"), args.token, args.poster_token, args.pid
        else:
            server = OwnServer()
            base, token, poster = server.start()
            pid = server.proc.pid
        report = asyncio.run(asyncio.wait_for(run(args, base, token, poster, pid), args.timeout))
        print(json.dumps(report, indent=2))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
