"""
The soak: connections churn for minutes across two server processes while
messages flow, and a gap checker proves that every client ends with every seq
of its room exactly once, in order; memory and Redis keys are read before and
after.

    python bench/soak.py --minutes 3 --clients 100 --rooms 5 --rate 5

Everything runs on throwaway servers it starts (PostgreSQL, Redis, two daphne
processes) on 127.0.0.1; loops are bounded in count and time.
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
from pathlib import Path

import redis
import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadtest import Stack  # noqa: E402
from tests.servers import free_port, wait_for_port  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


class Reader:
    """One client that keeps reconnecting, resuming with `since` each time."""

    def __init__(self, index: int, room: int, token: str, urls: list[str]):
        self.index, self.room, self.token, self.urls = index, room, token, urls
        self.seqs: list[int] = []
        self.reconnects = 0
        self.errors: list[str] = []
        self.joins: list[tuple[int, int]] = []  # (since, first seq received after it)

    async def session(self, seconds: float) -> None:
        url = random.choice(self.urls)
        async with websockets.connect(
            url, additional_headers={"Authorization": f"Token {self.token}"}, open_timeout=30
        ) as ws:
            # since=0 on the first join too: the checker wants every seq from 1.
            join = {
                "type": "join",
                "room": f"room{self.room}",
                "since": self.seqs[-1] if self.seqs else 0,
            }
            await ws.send(json.dumps(join))
            deadline = time.monotonic() + seconds
            since, first = (self.seqs[-1] if self.seqs else 0), None
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                try:
                    frame = json.loads(await asyncio.wait_for(ws.recv(), remaining))
                except TimeoutError:
                    return
                if frame["type"] == "message":
                    self.seqs.append(frame["seq"])
                    if first is None:
                        first = frame["seq"]
                        self.joins.append((since, first))
                elif frame["type"] == "error":
                    self.errors.append(frame["code"])

    async def churn(self, until: float) -> None:
        while time.monotonic() < until:
            try:
                await self.session(random.uniform(0.3, 3.0))
            except (OSError, websockets.exceptions.WebSocketException) as exc:
                self.errors.append(type(exc).__name__)
            self.reconnects += 1
            await asyncio.sleep(random.uniform(0, 0.5))


async def post_loop(
    tokens: list[str], rooms: int, rate: float, until: float, urls: list[str]
) -> int:
    """One poster per room over WebSocket, acked before the next."""
    sent = 0

    async def poster(room: int) -> None:
        nonlocal sent
        async with websockets.connect(
            random.choice(urls), additional_headers={"Authorization": f"Token {tokens[room]}"}
        ) as ws:
            while time.monotonic() < until:
                await ws.send(
                    json.dumps(
                        {
                            "type": "message",
                            "room": f"room{room}",
                            "content": "soak",
                            "client_id": str(uuid.uuid4()),
                        }
                    )
                )
                while json.loads(await ws.recv())["type"] != "ack":
                    pass
                sent += 1
                await asyncio.sleep(1 / rate)

    await asyncio.gather(*(poster(r) for r in range(rooms)))
    return sent


async def main_async(args) -> dict:
    stack = Stack("realtime", pin=False, users=args.clients + args.rooms, rooms=args.rooms)
    stack.start()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DATABASE_URL": stack.pg.url,
        "REDIS_URL": stack.redis.url,
        "CHAT_MESSAGE_RATE": "off",
        "CHAT_JOIN_RATE": "off",
        "LOG_LEVEL": "WARNING",
    }
    port2 = free_port()
    log2 = open(f"/tmp/soak-second-{port2}.log", "w")
    second = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port2),
            "project.asgi:application",
        ],
        cwd=ROOT,
        env=env,
        stdout=log2,
        stderr=subprocess.STDOUT,
    )
    wait_for_port(port2, timeout=60, proc=second)
    urls = [f"ws://127.0.0.1:{stack.port}/ws/", f"ws://127.0.0.1:{port2}/ws/"]
    r = redis.Redis.from_url(stack.redis.url)
    try:
        await asyncio.sleep(2)
        before = {
            "rss_mb": [rss_mb(stack.server.pid), rss_mb(second.pid)],
            "redis_keys": r.dbsize(),
        }
        readers = [
            Reader(i, i % args.rooms, stack.tokens[args.rooms + i], urls)
            for i in range(args.clients)
        ]
        until = time.monotonic() + args.minutes * 60
        sent, *_ = await asyncio.gather(
            post_loop(stack.tokens[: args.rooms], args.rooms, args.rate, until, urls),
            *(reader.churn(until) for reader in readers),
        )
        # Every reader resumes once more and reads up to the room's end.
        last = {}
        for room in range(args.rooms):
            out = subprocess.run(
                [
                    sys.executable,
                    "manage.py",
                    "shell",
                    "-c",
                    "from chat.models import Room; "
                    f"print(Room.objects.get(slug='room{room}').last_seq)",
                ],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            last[room] = int(out.stdout.strip().splitlines()[-1])
        for reader in readers:
            end = time.monotonic() + 30
            while (
                not reader.seqs or reader.seqs[-1] < last[reader.room]
            ) and time.monotonic() < end:
                await reader.session(2.0)
        gaps = dups = bad = 0
        examples = []
        for reader in readers:
            want = list(range(1, last[reader.room] + 1))
            if reader.seqs != want:
                bad += 1
                missing = sorted(set(want) - set(reader.seqs))
                gaps += len(missing)
                dups += len(reader.seqs) - len(set(reader.seqs))
                if len(examples) < 5:
                    examples.append(
                        {
                            "client": reader.index,
                            "missing": missing[:10],
                            "joins": [
                                j for j in reader.joins if j[0] in missing or j[0] + 1 in missing
                            ][:5],
                        }
                    )
        await asyncio.sleep(3)
        after = {"rss_mb": [rss_mb(stack.server.pid), rss_mb(second.pid)], "redis_keys": r.dbsize()}
        result = {
            "minutes": args.minutes,
            "clients": args.clients,
            "rooms": args.rooms,
            "messages_sent": sent,
            "sessions": sum(x.reconnects for x in readers),
            "clients_with_every_seq_once_in_order": len(readers) - bad,
            "missing_seqs": gaps,
            "duplicate_seqs": dups,
            "client_errors": sorted({e for x in readers for e in x.errors}),
            "gap_examples": examples,
            "before": before,
            "after": after,
        }
    finally:
        second.terminate()
        second.wait(10)
        log2.close()
        stack.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rooms", type=int, default=5)
    parser.add_argument("--rate", type=float, default=5, help="messages per second per room")
    args = parser.parse_args()
    if args.minutes > 30 or args.clients > 5000:
        raise SystemExit("bounded: at most 30 minutes and 5,000 clients")
    result = asyncio.run(main_async(args))
    print(json.dumps(result, indent=2))
    if result["missing_seqs"] or result["duplicate_seqs"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
